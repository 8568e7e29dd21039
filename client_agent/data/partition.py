"""Split a data set's rows among simulated clients (hospitals).

Every partitioner is a pure function of its inputs and ``seed`` (a fresh ``numpy.random.Generator``;
never the global ``np.random``) and returns one sorted ``int64`` index array per client. The arrays are
disjoint; they cover every row except where a docstring says which rows are dropped and why.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence

import numpy as np

from client_agent.data.errors import PartitionError

Partition = list[np.ndarray]
LabelsLike = Sequence[int] | np.ndarray
_MAX_DIRICHLET_TRIES = 1000


def iid(labels: LabelsLike, *, n_clients: int, seed: int) -> Partition:
    """A uniformly random split into ``n_clients`` parts whose sizes differ by at most one."""
    y = _labels(labels)
    _check_clients(n_clients, len(y))
    order = np.random.default_rng(seed).permutation(len(y))
    return [np.sort(part) for part in np.array_split(order, n_clients)]


def label_proportion(labels: LabelsLike, *, n_clients: int, low: float, high: float, seed: int) -> Partition:
    """Binary labels, equal-sized clients whose share of class 0 runs linearly from ``low`` to ``high``.

    The FFA-LoRA paper (Sun et al., ICLR 2024, Table 2: three clients) controls heterogeneity by label
    ratio, ``[low, high] = [0.3, 0.7]`` mild and ``[0.1, 0.9]`` severe. We space the clients' class-0
    fractions linearly, ``p_i = low + (high - low) * i / (n - 1)`` (a single client gets the midpoint);
    that is our reading of the setting, not code taken from the paper. Every client holds ``m`` rows,
    ``floor(m p_i + 1/2)`` of class 0 and the rest of class 1, where ``m`` is the largest size that the
    class counts allow. Rows left over (the surplus of whichever class the proportions need less of) are
    dropped: ``len(labels) - n_clients * m`` rows in all.
    """
    y = _labels(labels)
    _check_clients(n_clients, len(y))
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise PartitionError(f"`labels` must be binary (0/1), got classes {np.unique(y).tolist()}")
    if not 0.0 <= low <= high <= 1.0:
        raise PartitionError(f"need 0 <= low <= high <= 1, got low={low}, high={high}")
    p = np.full(1, (low + high) / 2) if n_clients == 1 else np.linspace(low, high, n_clients)
    by_class = [np.flatnonzero(y == c) for c in (0, 1)]
    m = _largest_client_size(p, n0=len(by_class[0]), n1=len(by_class[1]), n_rows=len(y))
    if m == 0:
        raise PartitionError(f"the class counts allow no client with proportions {p.round(3).tolist()}")
    n_class0 = np.floor(m * p + 0.5).astype(np.int64)
    rng = np.random.default_rng(seed)
    shuffled = [rng.permutation(members) for members in by_class]
    ends0, ends1 = np.cumsum(n_class0), np.cumsum(m - n_class0)
    return [
        np.sort(np.concatenate([shuffled[0][e0 - c0 : e0], shuffled[1][e1 - (m - c0) : e1]]))
        for c0, e0, e1 in zip(n_class0, ends0, ends1, strict=True)
    ]


def _largest_client_size(p: np.ndarray, *, n0: int, n1: int, n_rows: int) -> int:
    need0, need1 = float(p.sum()), float((1 - p).sum())
    bound = n_rows // len(p)
    if need0 > 0:
        bound = min(bound, int(n0 / need0))
    if need1 > 0:
        bound = min(bound, int(n1 / need1))
    # Rounding each client's class-0 count can overshoot a class by a few rows: step down until it fits.
    for m in range(bound, 0, -1):
        class0 = int(np.floor(m * p + 0.5).sum())
        if class0 <= n0 and len(p) * m - class0 <= n1:
            return m
    return 0


def dirichlet(
    labels: LabelsLike, *, n_clients: int, alpha: float, seed: int, min_size: int = 10
) -> Partition:
    """Label skew drawn from a symmetric Dirichlet (Hsu, Qi & Brown 2019, "Measuring the effects of
    non-identical data distribution for federated visual classification").

    For each class ``k``, proportions ``q_k ~ Dir(alpha * 1_n)`` are drawn and the class's shuffled rows
    are cut at ``floor(cumsum(q_k) * n_k)``. Small ``alpha`` gives each client few classes; large ``alpha``
    approaches IID. The whole draw is repeated (up to 1000 times, on the same generator, so it stays
    deterministic) until every client has at least ``min_size`` rows. Covers every row.
    """
    y = _labels(labels)
    _check_clients(n_clients, len(y))
    if not alpha > 0:
        raise PartitionError(f"`alpha` must be positive, got {alpha}")
    if min_size < 0 or min_size * n_clients > len(y):
        raise PartitionError(f"`min_size` {min_size} x {n_clients} clients exceeds the {len(y)} rows")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(_MAX_DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for k in classes:
            members = rng.permutation(np.flatnonzero(y == k))
            q = rng.dirichlet(np.full(n_clients, alpha))
            cuts = np.floor(np.cumsum(q)[:-1] * len(members)).astype(np.int64)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].append(chunk)
        partition = [np.sort(np.concatenate(chunks)) for chunks in parts]
        if min(len(part) for part in partition) >= min_size:
            return partition
    raise PartitionError(
        f"no Dirichlet(alpha={alpha}) draw in {_MAX_DIRICHLET_TRIES} gave every client {min_size} rows; "
        "raise alpha or lower min_size"
    )


def natural(groups: Sequence[Hashable], *, n_clients: int, seed: int) -> Partition:
    """Whole groups (a condition, a drug, a ward) per client, like hospitals with different case mixes.

    Groups are dealt largest first to the client with the fewest rows so far (the LPT heuristic, which
    keeps the largest client within 4/3 of the best possible balance; Graham 1969). ``seed`` only breaks
    ties between equal-sized groups; client ties go to the lower client index. Covers every row.
    """
    keys = list(groups)
    distinct: dict[Hashable, list[int]] = {}
    for row, key in enumerate(keys):
        distinct.setdefault(key, []).append(row)
    _check_clients(n_clients, len(keys))
    if len(distinct) < n_clients:
        raise PartitionError(f"{len(distinct)} groups cannot fill {n_clients} clients")
    members = list(distinct.values())
    tie_break = np.random.default_rng(seed).permutation(len(members))
    order = sorted(range(len(members)), key=lambda g: (-len(members[g]), tie_break[g]))
    loads = [(0, client) for client in range(n_clients)]
    assigned: list[list[int]] = [[] for _ in range(n_clients)]
    for g in order:
        load, client = heapq.heappop(loads)
        assigned[client].extend(members[g])
        heapq.heappush(loads, (load + len(members[g]), client))
    return [np.sort(np.asarray(rows, dtype=np.int64)) for rows in assigned]


def client_class_counts(partition: Partition, labels: LabelsLike, n_classes: int) -> np.ndarray:
    """A ``(n_clients, n_classes)`` matrix: rows of each class held by each client."""
    y = _labels(labels)
    if y.size and y.max() >= n_classes:
        raise PartitionError(f"label {int(y.max())} is out of range for n_classes={n_classes}")
    counts = np.zeros((len(partition), n_classes), dtype=np.int64)
    for client, idx in enumerate(partition):
        counts[client] = np.bincount(y[idx], minlength=n_classes)
    return counts


def _labels(labels: LabelsLike) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise PartitionError(
            f"`labels` must be a 1-D sequence of integers, got dtype {y.dtype}, shape {y.shape}"
        )
    if y.size and y.min() < 0:
        raise PartitionError(f"`labels` must be non-negative, got {int(y.min())}")
    return y.astype(np.int64)


def _check_clients(n_clients: int, n_rows: int) -> None:
    if not 1 <= n_clients <= n_rows:
        raise PartitionError(f"`n_clients` must lie in 1..{n_rows} (the number of rows), got {n_clients}")
