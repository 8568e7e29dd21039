"""The in-memory data set every loader returns, and a stratified train/test split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from client_agent.data.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Texts with integer labels; ``label_names[i]`` names label ``i``.

    ``meta`` holds optional per-row string columns (a review's ``condition`` and ``drug``, a snippet's
    ``movie``) that partitioners such as :func:`client_agent.data.partition.natural` group by.
    """

    texts: list[str]
    labels: list[int]
    label_names: tuple[str, ...]
    name: str
    meta: Mapping[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(
                f"{len(self.texts)} texts but {len(self.labels)} labels", path=self.name, field="labels"
            )
        if not self.label_names:
            raise DataError("no label names", path=self.name, field="label_names")
        n_classes = len(self.label_names)
        for row, label in enumerate(self.labels):
            if not 0 <= label < n_classes:
                raise DataError(
                    f"label index out of range 0..{n_classes - 1}",
                    path=self.name,
                    field=f"labels[{row}]",
                )
        for column, values in self.meta.items():
            if len(values) != len(self.texts):
                raise DataError(
                    f"{len(values)} values for {len(self.texts)} rows", path=self.name, field=column
                )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def label_array(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray, *, name: str | None = None) -> Dataset:
        """The rows at ``indices``, in that order, with their meta columns."""
        idx = [int(i) for i in indices]
        return Dataset(
            texts=[self.texts[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            label_names=self.label_names,
            name=self.name if name is None else name,
            meta={column: [values[i] for i in idx] for column, values in self.meta.items()},
        )


def train_test_split(ds: Dataset, *, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split ``ds`` into (train, test), stratified by label and deterministic given ``seed``.

    The test set holds ``round(test_fraction * len(ds))`` rows. Each class contributes its share
    ``test_fraction * n_c``, rounded by largest remainder so that the class shares add up to that total
    exactly (ties go to the lower class index). Rows keep their original order within each part.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"must lie strictly between 0 and 1, got {test_fraction}", field="test_fraction")
    labels = ds.label_array()
    counts = np.bincount(labels, minlength=ds.n_classes)
    quotas = _largest_remainder(counts * test_fraction, total=round(len(ds) * test_fraction))
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    for cls in range(ds.n_classes):
        members = np.flatnonzero(labels == cls)
        test_idx.append(rng.permutation(members)[: quotas[cls]])
    test = np.sort(np.concatenate(test_idx)) if test_idx else np.empty(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(ds)), test, assume_unique=True)
    return ds.subset(train, name=f"{ds.name}/train"), ds.subset(test, name=f"{ds.name}/test")


def _largest_remainder(shares: np.ndarray, *, total: int) -> np.ndarray:
    """Integers that sum to ``total``, each the floor of its share plus at most one."""
    floors = np.floor(shares).astype(np.int64)
    missing = total - int(floors.sum())
    order = np.argsort(-(shares - floors), kind="stable")
    floors[order[:missing]] += 1
    return floors
