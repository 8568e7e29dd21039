"""CLAIR: recover the clients' shared low-rank subspace and flag contaminated clients.

He, Chen, Feng 2026 ("Federated LoRA Fine-Tuning for LLMs via Collaborative Alignment",
arXiv:2605.21217) stack the clients' preliminary updates as the rows of `M` (`n x d`) and split
`M = L + S`: benign rows lie near one shared `k`-dimensional row space, so `L` has low rank, and a few
contaminated rows are arbitrary, so `S` is row-sparse (block-sparse, one block per client). The split is
the convex relaxation of Outlier Pursuit (Xu, Caramanis, Sanghavi 2012, "Robust PCA via Outlier
Pursuit", IEEE Trans. Inf. Theory 58(5)), with rows in place of that paper's columns:

    minimise ||L||_* + lam * sum_i ||S_i||_2   subject to   M = L + S,

solved by the inexact augmented Lagrangian method. The cloud then averages the unflagged clients inside
the recovered subspace. At the cloud under encryption a row is one edge's aggregate instead of a client.

Which rows are contaminated is read from the recovered subspace, not from `S` alone. Real clients' updates
are only near the shared subspace (He et al.'s "preliminary estimation error"): on MiniLM, ten hospitals'
honest first-round updates share one direction but keep 55-78% of their norm outside it, so the
relaxation moves a large part of every honest row into `S` as well, and a fixed cut on `||S_i|| / ||M_i||`
at 0.5 flagged all ten rows (`bench/clair_separation.py`). What does separate the two groups is how much of
a row the subspace explains: 0.65-0.83 for honest rows there, 0.006-0.036 for random updates (about
`sqrt(k / d)`, what any direction unrelated to the subspace gets). A row is flagged when its share falls
below `threshold` times the median row's, which assumes (as CLAIR's identifiability does) that most rows are benign.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# `lam` trades a row's cost in `L` against its cost in `S`. A direction carried by `m` identical rows,
# orthogonal to the rest, costs `sqrt(m) ||x||` in the nuclear norm and `lam m ||x||` in `S`, so it stays
# in `L` only if `lam > 1 / sqrt(m)`; a lone row far from the shared space moves to `S` once `lam` falls
# below its off-subspace share (about 1). For benign rows the bound is the square root of their leverage
# in the shared space, about `sqrt(k / n)`, larger for clients with atypically large updates. Xu et al.'s
# `3 / (7 sqrt(gamma n))` is a sufficient condition for large `n`: at 20 clients and gamma = 0.1 it gives
# 0.30, which moved high-leverage benign clients into `S` in our synthetic runs (k = 3). Measured there
# (n = 10..100, k = 1..8, 10-30% contaminated rows), every lam in [0.7, 0.9] separated the two sets; 0.75
# sits nearer the lower edge, whose failure (a benign client dropped) is milder than the upper edge's (the
# outliers absorbed into the shared subspace). It treats a direction shared by two or more clients as
# shared: identical colluding clients are not flagged unless `lam < 1 / sqrt(colluders)`.
DEFAULT_LAM = 0.75
# Growth of the penalty `mu` per iteration. Lin, Chen, Ma (2010, "The Augmented Lagrange Multiplier Method
# for Exact Recovery of Corrupted Low-Rank Matrices", arXiv:1009.5055, Algorithm 5) use 1.5 for RPCA; here
# 1.5 met the constraint before the objective settled (up to 5% above the optimum), 1.1 reaches it.
_MU_GROWTH = 1.1
# `mu` stops growing at this multiple of its start, as in Lin et al.'s reference code.
_MU_CAP = 1e7
# A row is flagged when the shared subspace explains less than this fraction of what it explains of the
# median row. On MiniLM's updates (`bench/clair_separation.py`) honest rows stay above 0.9 of the median and
# random updates below 0.06; on planted data (d = 200, k = 3) outliers sit near sqrt(k / d) ~ 0.12 against
# honest rows at 1. 0.3 leaves room on both sides.
DEFAULT_THRESHOLD = 0.3


class ClairError(ValueError):
    """The updates or the settings cannot be decomposed as asked."""


@dataclass(frozen=True, eq=False)
class ClairResult:
    """The decomposition `updates = low_rank + sparse` and what the cloud reads from it."""

    low_rank: np.ndarray  # (n, d)
    sparse: np.ndarray  # (n, d)
    subspace: np.ndarray  # (d, k) orthonormal basis of the shared row space
    scores: np.ndarray  # (n,) ||S_i|| / ||M_i||: the share of a row the relaxation put in S
    fit: np.ndarray  # (n,) ||P M_i|| / ||M_i||: the share of a row the shared subspace explains
    flagged: tuple[int, ...]  # rows judged contaminated
    iterations: int
    converged: bool

    def shared_update(self, weights: np.ndarray | None = None) -> np.ndarray:
        """The weighted mean of the unflagged clients' updates, projected on the shared subspace (`d`).

        CLAIR's refinement (He et al. 2026): averaging inside the recovered subspace removes each
        client's off-subspace error while keeping the clients' variation within it. The rows averaged
        are the clients' own updates (`low_rank + sparse`), not the `low_rank` rows, which the nuclear
        norm may have shrunk. `weights` holds one non-negative number per row; flagged rows get none.
        """
        rows = self.low_rank.shape[0]
        kept = np.setdiff1d(np.arange(rows), np.asarray(self.flagged, dtype=np.int64))
        if self.subspace.shape[1] == 0:
            raise ClairError(
                f"no shared subspace was recovered from the {rows} rows (the low-rank part is zero): "
                "there is no shared update"
            )
        if weights is None:
            w = np.ones(rows)
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (rows,) or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ClairError(f"weights must be {rows} finite non-negative numbers, got {weights!r}")
        kept_weights = w[kept]
        total = float(kept_weights.sum())
        if total <= 0:
            raise ClairError(f"weights of the unflagged rows {kept.tolist()} sum to {total}, need > 0")
        updates = self.low_rank[kept] + self.sparse[kept]
        mean = kept_weights @ updates / total
        return np.asarray(self.subspace @ (self.subspace.T @ mean))


def _validated_updates(updates: np.ndarray) -> np.ndarray:
    matrix = np.asarray(updates, dtype=np.float64)
    if matrix.ndim != 2:
        raise ClairError(f"updates must be a 2-D matrix (one row per client), got shape {matrix.shape}")
    if matrix.shape[0] < 2 or matrix.shape[1] < 1:
        raise ClairError(f"updates needs at least 2 rows and 1 column, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ClairError(f"updates must be finite, got NaN or infinity in rows {_bad_rows(matrix)}")
    if not np.any(matrix):
        raise ClairError("updates is all zeros: there is nothing to decompose")
    return matrix


def _bad_rows(matrix: np.ndarray) -> list[int]:
    return np.flatnonzero(~np.all(np.isfinite(matrix), axis=1)).tolist()


def _check_settings(
    shape: tuple[int, int], *, rank: int | None, lam: float, threshold: float, max_iter: int, tol: float
) -> None:
    if rank is not None and not 1 <= rank <= min(shape):
        raise ClairError(f"rank must lie in [1, {min(shape)}] for updates of shape {shape}, got {rank}")
    if not (math.isfinite(lam) and lam > 0):
        raise ClairError(f"lam must be finite and positive, got {lam}")
    if not 0 < threshold < 1:
        raise ClairError(f"threshold must lie in (0, 1), got {threshold}")
    if max_iter < 1:
        raise ClairError(f"max_iter must be at least 1, got {max_iter}")
    if not (math.isfinite(tol) and tol > 0):
        raise ClairError(f"tol must be finite and positive, got {tol}")


def _singular_value_threshold(matrix: np.ndarray, tau: float) -> np.ndarray:
    # Proximal operator of tau * ||.||_* (Cai, Candès, Shen 2010, "A Singular Value Thresholding
    # Algorithm for Matrix Completion", eq. 2.2): shrink every singular value by tau.
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    return np.asarray((u * np.maximum(s - tau, 0.0)) @ vt)


def _row_shrink(matrix: np.ndarray, tau: float) -> np.ndarray:
    # Proximal operator of tau * sum_i ||row_i||_2 (group soft-thresholding, as in Xu et al. 2012):
    # every row is shortened by tau, rows shorter than tau become zero.
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    factor = np.maximum(1.0 - tau / np.maximum(norms, np.finfo(np.float64).tiny), 0.0)
    return matrix * factor


def _outlier_pursuit(
    matrix: np.ndarray, *, lam: float, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Inexact ALM (Lin, Chen, Ma 2010, Algorithm 5) with the row-wise L2,1 norm in place of L1."""
    spectral = float(np.linalg.norm(matrix, 2))
    largest_row = float(np.linalg.norm(matrix, axis=1).max())
    # The multiplier starts at Lin et al.'s `Y_0 = M / J(M)`, with `J` the dual norm of the objective:
    # max(||M||_2, max_i ||M_i||_2 / lam), the row-wise L2,1 norm's dual being the largest row norm.
    multiplier = matrix / max(spectral, largest_row / lam)
    mu = 1.25 / spectral
    mu_cap = mu * _MU_CAP
    frobenius = float(np.linalg.norm(matrix))
    sparse = np.zeros_like(matrix)
    low_rank = np.zeros_like(matrix)
    for iteration in range(1, max_iter + 1):
        low_rank = _singular_value_threshold(matrix - sparse + multiplier / mu, 1.0 / mu)
        sparse = _row_shrink(matrix - low_rank + multiplier / mu, lam / mu)
        residual = matrix - low_rank - sparse
        multiplier = multiplier + mu * residual
        mu = min(mu * _MU_GROWTH, mu_cap)
        if np.linalg.norm(residual) <= tol * frobenius:
            return low_rank, sparse, iteration, True
    return low_rank, sparse, max_iter, False


def _shared_subspace(rows: np.ndarray, rank: int | None) -> np.ndarray:
    """Orthonormal basis (`d x k`) of the top right singular vectors of `rows`.

    Without `rank`, `k` is where consecutive singular values drop the most (the eigengap heuristic,
    von Luxburg 2007, "A tutorial on spectral clustering", sec. 8.3); values below the numerical-rank
    floor (machine epsilon times the largest value times the larger dimension) count as the floor.
    """
    dims = rows.shape[1]
    if rows.shape[0] == 0:
        return np.zeros((dims, 0))
    _, s, vt = np.linalg.svd(rows, full_matrices=False)
    if rank is None:
        if s[0] == 0:
            return np.zeros((dims, 0))
        floor = s[0] * np.finfo(np.float64).eps * max(rows.shape)
        clipped = np.maximum(s, floor)
        ratios = clipped / np.append(clipped[1:], floor)
        rank = int(np.argmax(ratios)) + 1
    return np.asarray(vt[:rank].T)


def decompose(
    updates: np.ndarray,
    *,
    rank: int | None = None,
    lam: float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    max_iter: int = 500,
    tol: float = 1e-7,
) -> ClairResult:
    """Split `updates` (`n x d`, one row per client) into a shared low-rank part and outlying rows.

    The shared subspace is first read from `low_rank` (all rows: the relaxation has already moved what
    does not fit into `sparse`); a row is flagged when the share of it that this subspace explains is
    below `threshold` times the median row's share (see the module's docstring). The returned subspace is
    then read again from the unflagged rows of `low_rank`, so that a flagged row cannot tilt it. With
    `rank` it has at most `rank` columns, without, the eigengap picks `k`. `lam` defaults to
    `DEFAULT_LAM` (see there); `tol` bounds `||M - L - S||_F / ||M||_F`.
    """
    matrix = _validated_updates(updates)
    lam = DEFAULT_LAM if lam is None else float(lam)
    _check_settings(matrix.shape, rank=rank, lam=lam, threshold=threshold, max_iter=max_iter, tol=tol)
    low_rank, sparse, iterations, converged = _outlier_pursuit(matrix, lam=lam, max_iter=max_iter, tol=tol)
    tiny = np.finfo(np.float64).tiny
    norms = np.linalg.norm(matrix, axis=1)
    scores = np.linalg.norm(sparse, axis=1) / (norms + tiny)
    shared = _shared_subspace(low_rank, rank)
    fit = _fit(matrix, shared, norms)
    typical = float(np.median(fit))
    flagged = tuple(int(i) for i in np.flatnonzero(fit < threshold * typical)) if typical > 0 else ()
    if flagged:
        kept = np.setdiff1d(np.arange(matrix.shape[0]), np.asarray(flagged, dtype=np.int64))
        shared = _shared_subspace(low_rank[kept], rank)
    return ClairResult(
        low_rank=low_rank,
        sparse=sparse,
        subspace=shared,
        scores=scores,
        fit=fit,
        flagged=flagged,
        iterations=iterations,
        converged=converged,
    )


def _fit(matrix: np.ndarray, subspace: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Per row, `||U^T M_i|| / ||M_i||`: 1 inside the subspace, 0 orthogonal to it (0 for a zero row)."""
    inside = np.linalg.norm(matrix @ subspace, axis=1)
    return np.divide(inside, norms, out=np.zeros_like(inside), where=norms > 0)
