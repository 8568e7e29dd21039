"""A simulated hospital's share of a bundled task: `'mild:2/4'` is hospital 2 of 4 in a mild label split.

The demo and the experiments give each hospital process one share; every process computes the same
train/test split and partition from the same seed, so the shares are disjoint without any coordination.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from client_agent.data.dataset import Dataset, train_test_split
from client_agent.data.errors import PartitionError
from client_agent.data.partition import Partition, dirichlet, iid, label_proportion
from client_agent.data.tasks import load_task

_SHARE = re.compile(r"^(iid|mild|severe|dirichlet(?:-[0-9.]+)?):(\d+)/(\d+)$")


@dataclass(frozen=True)
class Share:
    kind: str
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Share:
        match = _SHARE.match(text.strip())
        if match is None:
            raise PartitionError(
                f"partition {text!r} is not KIND:I/N with KIND iid, mild, severe or dirichlet[-ALPHA], "
                "e.g. 'mild:1/4'"
            )
        kind, index, count = match.group(1), int(match.group(2)), int(match.group(3))
        if not 1 <= index <= count:
            raise PartitionError(f"partition {text!r}: hospital {index} is not among 1..{count}")
        return cls(kind, index, count)


def partition(labels: np.ndarray, *, kind: str, n_clients: int, seed: int) -> Partition:
    """Split `labels` among `n_clients` as `kind` says (iid, mild, severe, dirichlet or dirichlet-ALPHA)."""
    if kind == "iid":
        return iid(labels, n_clients=n_clients, seed=seed)
    if kind in ("mild", "severe"):
        low, high = (0.3, 0.7) if kind == "mild" else (0.1, 0.9)
        return label_proportion(labels, n_clients=n_clients, low=low, high=high, seed=seed)
    if kind.startswith("dirichlet"):
        alpha = float(kind.split("-", 1)[1]) if "-" in kind else 0.5
        return dirichlet(labels, n_clients=n_clients, alpha=alpha, seed=seed)
    raise PartitionError(f"unknown partition kind {kind!r}")


def task_split(
    task: str,
    *,
    seed: int = 0,
    test_fraction: float = 0.1,
    max_train_examples: int | None = None,
    max_test_examples: int | None = None,
) -> tuple[Dataset, Dataset]:
    """The federation-wide train pool and held-out test set of a bundled task, capped and seeded.

    A task may hold the same text in several rows (Rotten Tomatoes does), and the split is of rows: a test
    row whose exact text is also in the (capped) train pool is dropped after the split, so that no test
    example was trained on, and the test set may hold a few rows fewer than `max_test_examples`. Dropping
    them leaves every other row where the seeded split put it."""
    train, test = train_test_split(load_task(task), test_fraction=test_fraction, seed=seed)
    rng = np.random.default_rng(seed)
    if max_train_examples is not None and len(train) > max_train_examples:
        train = train.subset(rng.permutation(len(train))[:max_train_examples])
    if max_test_examples is not None and len(test) > max_test_examples:
        test = test.subset(rng.permutation(len(test))[:max_test_examples])
    seen = set(train.texts)
    unseen = [row for row, text in enumerate(test.texts) if text not in seen]
    if len(unseen) < len(test):
        test = test.subset(unseen)
    return train, test


def hospital_share(
    task: str, share: Share, *, seed: int = 0, max_train_examples: int | None = None
) -> Dataset:
    """Hospital `share.index` of `share.count`'s training rows."""
    train, _ = task_split(task, seed=seed, max_train_examples=max_train_examples)
    parts = partition(train.label_array(), kind=share.kind, n_clients=share.count, seed=seed)
    return train.subset(parts[share.index - 1], name=f"{task}[{share.kind}:{share.index}/{share.count}]")
