"""Named classification tasks built on the bundled data sets, and a registry to load them by name."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from client_agent.data.bundled import DRUG_REVIEWS, ROTTEN_TOMATOES, Record, Source, load_records
from client_agent.data.dataset import Dataset
from client_agent.data.errors import DataError

DEFAULT_TOP_CONDITIONS = 5


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    build: Callable[[str | Path | None], Dataset]


def _from_records(
    name: str, source: Source, cache_dir: str | Path | None, label_names: tuple[str, ...], label_key: str
) -> Dataset:
    records = load_records(source, cache_dir)
    index = {label: i for i, label in enumerate(label_names)}
    kept = [r for r in records if r[label_key] in index]
    return _dataset(name, source, kept, label_names, [index[r[label_key]] for r in kept])


def _dataset(
    name: str, source: Source, records: list[Record], label_names: tuple[str, ...], labels: list[int]
) -> Dataset:
    meta_columns = source.columns[2:]
    return Dataset(
        texts=[r["text"] for r in records],
        labels=labels,
        label_names=label_names,
        name=name,
        meta={column: [r[column] for r in records] for column in meta_columns},
    )


def rt_sentiment(cache_dir: str | Path | None = None) -> Dataset:
    """Rotten Tomatoes critic snippets: rotten = 0, fresh = 1 (plot synopses dropped)."""
    return _from_records("rt_sentiment", ROTTEN_TOMATOES, cache_dir, ("rotten", "fresh"), "label")


def drug_sentiment(cache_dir: str | Path | None = None) -> Dataset:
    """Drug reviews, three classes: negative (rating 1-4) = 0, neutral (5-6) = 1, positive (7-10) = 2."""
    labels = ("negative", "neutral", "positive")
    return _from_records("drug_sentiment", DRUG_REVIEWS, cache_dir, labels, "label")


def drug_sentiment_binary(cache_dir: str | Path | None = None) -> Dataset:
    """Drug reviews without the neutral ones: negative = 0, positive = 1."""
    labels = ("negative", "positive")
    return _from_records("drug_sentiment_binary", DRUG_REVIEWS, cache_dir, labels, "label")


def drug_condition(cache_dir: str | Path | None = None, *, top_k: int = DEFAULT_TOP_CONDITIONS) -> Dataset:
    """Drug reviews labelled by condition: the ``top_k`` most frequent conditions, reviews of others dropped.

    Label 0 is the most frequent condition (ties broken alphabetically); reviews without a condition
    (or with a scraping artefact in its place) never count.
    """
    if top_k < 2:
        raise DataError(f"must be at least 2, got {top_k}", field="top_k")
    records = load_records(DRUG_REVIEWS, cache_dir)
    counts = Counter(r["condition"] for r in records if r["condition"])
    if top_k > len(counts):
        raise DataError(f"{top_k} asked, only {len(counts)} conditions exist", field="top_k")
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    label_names = tuple(condition for condition, _ in ranked[:top_k])
    index = {condition: i for i, condition in enumerate(label_names)}
    kept = [r for r in records if r["condition"] in index]
    name = "drug_condition" if top_k == DEFAULT_TOP_CONDITIONS else f"drug_condition_top{top_k}"
    return _dataset(name, DRUG_REVIEWS, kept, label_names, [index[r["condition"]] for r in kept])


#: The instruction of `drug_condition_qa`; the answer is the condition's name.
CONDITION_PROMPT = "Review: {review}\nCondition?"


def drug_condition_qa(cache_dir: str | Path | None = None) -> Dataset:
    """`drug_condition` as instruction/answer pairs for a causal LM: each text is the prompt "Review: ...
    Condition?" and its answer is its label's name (`label_names[label]`), scored by exact match."""
    conditions = drug_condition(cache_dir)
    texts = [CONDITION_PROMPT.format(review=text) for text in conditions.texts]
    return Dataset(texts, conditions.labels, conditions.label_names, "drug_condition_qa", conditions.meta)


#: Tasks whose texts are prompts and whose label names are the answers (`client_agent.tasks.CausalLM`).
QA_TASKS = frozenset({"drug_condition_qa"})

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("rt_sentiment", "Rotten Tomatoes snippets, rotten/fresh", rt_sentiment),
        Task("drug_sentiment", "drug reviews, negative/neutral/positive", drug_sentiment),
        Task("drug_sentiment_binary", "drug reviews, negative/positive", drug_sentiment_binary),
        Task(
            "drug_condition",
            f"drug reviews, the {DEFAULT_TOP_CONDITIONS} most frequent conditions",
            lambda cache_dir: drug_condition(cache_dir),
        ),
        Task(
            "drug_condition_qa",
            f"drug reviews as 'Review: ... Condition?' prompts, answered by one of the "
            f"{DEFAULT_TOP_CONDITIONS} most frequent conditions (causal LM, exact match)",
            drug_condition_qa,
        ),
    )
}


def load_task(name: str, cache_dir: str | Path | None = None) -> Dataset:
    """The data set of the task called ``name`` (one of :data:`TASKS`)."""
    task = TASKS.get(name)
    if task is None:
        raise DataError(f"unknown task {name!r}; expected one of {sorted(TASKS)}", field="task")
    return task.build(cache_dir)
