"""CLAIR: shared-subspace recovery and contaminated-client detection on planted data."""

import numpy as np
import pytest
import scipy.linalg

from protocol.clair import DEFAULT_LAM, ClairError, decompose

CLIENTS, DIMS, RANK = 20, 200, 3


def planted(seed: int, *, contaminated: int, noise: float = 1e-3, scale: float = 5.0):
    """Benign rows `coefficients @ basis.T` plus noise; `contaminated` rows replaced by random vectors
    `scale` times longer than a typical benign row. Returns the updates, the clean benign rows, the
    basis and the contaminated rows."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((DIMS, RANK)))
    clean = rng.standard_normal((CLIENTS, RANK)) @ basis.T
    updates = clean + noise * rng.standard_normal((CLIENTS, DIMS))
    bad = np.sort(rng.choice(CLIENTS, contaminated, replace=False))
    outliers = rng.standard_normal((contaminated, DIMS))
    typical = np.median(np.linalg.norm(clean, axis=1))
    updates[bad] = outliers * (scale * typical / np.linalg.norm(outliers, axis=1, keepdims=True))
    return updates, clean, basis, tuple(int(i) for i in bad)


def largest_sine(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sin(scipy.linalg.subspace_angles(found, truth)).max())


def test_recovers_the_planted_subspace_and_contaminated_rows():
    # Prepare
    updates, _, basis, bad = planted(0, contaminated=4)

    # Execute
    result = decompose(updates)

    # Assert
    assert result.converged
    assert result.flagged == bad
    assert result.subspace.shape == (DIMS, RANK)
    np.testing.assert_allclose(result.subspace.T @ result.subspace, np.eye(RANK), atol=1e-10)
    assert largest_sine(result.subspace, basis) < 0.05
    np.testing.assert_allclose(result.low_rank + result.sparse, updates, atol=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("contaminated", [2, 4])  # 10% and 20% of the clients
def test_detection_precision_and_recall(seed, contaminated):
    updates, _, basis, bad = planted(seed, contaminated=contaminated)
    result = decompose(updates, rank=RANK)
    hits = len(set(result.flagged) & set(bad))
    assert hits / max(len(result.flagged), 1) >= 0.9  # precision
    assert hits / len(bad) >= 0.9  # recall
    assert largest_sine(result.subspace, basis) < 0.05


@pytest.mark.parametrize("seed", [4, 5])
def test_nothing_is_flagged_without_contamination(seed):
    updates, _, basis, _ = planted(seed, contaminated=0)
    result = decompose(updates)
    assert result.flagged == ()
    assert result.scores.max() < 0.5
    assert largest_sine(result.subspace, basis) < 0.05


def test_shared_update_tracks_the_benign_mean_not_the_naive_one():
    # Prepare
    updates, clean, _, bad = planted(6, contaminated=4)
    benign = np.setdiff1d(np.arange(CLIENTS), bad)
    target = clean[benign].mean(axis=0)

    # Execute
    shared = decompose(updates).shared_update()

    # Assert: the 16 benign rows' noise, projected on 3 directions, leaves ~1e-3; the outliers drag the
    # plain mean of all rows by several times the target's own length.
    naive_error = np.linalg.norm(updates.mean(axis=0) - target)
    assert np.linalg.norm(shared - target) < 0.01
    assert naive_error > 50 * np.linalg.norm(shared - target)


def test_shared_update_weights_select_clients_and_ignore_flagged_rows():
    updates, clean, _, bad = planted(7, contaminated=2)
    result = decompose(updates)
    benign = int(np.setdiff1d(np.arange(CLIENTS), bad)[0])
    one_client = np.zeros(CLIENTS)
    one_client[benign] = 1.0
    # One benign client's update projected on the shared subspace is its clean row up to noise.
    np.testing.assert_allclose(result.shared_update(one_client), clean[benign], atol=0.01)
    heavy_on_outliers = one_client.copy()
    heavy_on_outliers[list(bad)] = 1e6
    np.testing.assert_array_equal(result.shared_update(heavy_on_outliers), result.shared_update(one_client))


def test_solution_is_no_worse_than_the_planted_split():
    # The planted split (benign rows in L, contaminated rows in S) is feasible, so the optimum's
    # objective ||L||_* + lam sum_i ||S_i|| cannot exceed it.
    updates, _, _, bad = planted(8, contaminated=4, noise=0.0)
    low_rank, sparse = updates.copy(), np.zeros_like(updates)
    low_rank[list(bad)], sparse[list(bad)] = 0.0, updates[list(bad)]

    def objective(lr: np.ndarray, sp: np.ndarray) -> float:
        nuclear = np.linalg.svd(lr, compute_uv=False).sum()
        return float(nuclear + DEFAULT_LAM * np.linalg.norm(sp, axis=1).sum())

    result = decompose(updates, tol=1e-9)
    assert objective(result.low_rank, result.sparse) <= objective(low_rank, sparse) * (1 + 1e-6)


def test_scores_do_not_depend_on_scale():
    updates, _, _, _ = planted(9, contaminated=3)
    small, large = decompose(updates), decompose(1e4 * updates)
    assert small.flagged == large.flagged
    np.testing.assert_allclose(small.scores, large.scores, atol=1e-5)


def test_colluding_pair_is_caught_only_below_one_over_sqrt_two():
    # Two identical rows span a direction whose nuclear-norm cost sqrt(2)|x| beats lam * 2|x| exactly
    # when lam > 1/sqrt(2): the default treats them as shared structure, a smaller lam flags them.
    updates, _, _, _ = planted(10, contaminated=0)
    attack = np.random.default_rng(10).standard_normal(DIMS)
    updates[[3, 11]] = attack * (5 * np.linalg.norm(updates[0]) / np.linalg.norm(attack))
    assert {3, 11}.isdisjoint(decompose(updates).flagged)
    assert {3, 11} <= set(decompose(updates, lam=0.6).flagged)


def test_rank_caps_the_subspace():
    updates, _, basis, _ = planted(11, contaminated=2)
    one = decompose(updates, rank=1).subspace
    assert one.shape == (DIMS, 1)
    assert np.linalg.norm(basis.T @ one) == pytest.approx(1.0, abs=1e-3)  # inside the planted space


def test_reports_an_unfinished_solve():
    updates, _, _, _ = planted(12, contaminated=2)
    result = decompose(updates, max_iter=3)
    assert (result.iterations, result.converged) == (3, False)


@pytest.mark.parametrize(
    ("updates", "kwargs", "message"),
    [
        (np.ones(5), {}, "updates must be a 2-D matrix"),
        (np.ones((1, 5)), {}, "at least 2 rows"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), {}, r"updates must be finite.*rows \[0\]"),
        (np.zeros((3, 4)), {}, "all zeros"),
        (np.ones((3, 4)), dict(rank=4), "rank must lie in"),
        (np.ones((3, 4)), dict(rank=0), "rank must lie in"),
        (np.ones((3, 4)), dict(lam=0.0), "lam"),
        (np.ones((3, 4)), dict(threshold=1.0), "threshold"),
        (np.ones((3, 4)), dict(max_iter=0), "max_iter"),
        (np.ones((3, 4)), dict(tol=-1.0), "tol"),
    ],
)
def test_rejects_bad_input(updates, kwargs, message):
    with pytest.raises(ClairError, match=message):
        decompose(updates, **kwargs)


def test_shared_update_rejects_bad_weights_and_all_flagged_rows():
    updates, _, _, bad = planted(13, contaminated=2)
    result = decompose(updates)
    with pytest.raises(ClairError, match="weights must be 20"):
        result.shared_update(np.ones(3))
    only_outliers = np.zeros(CLIENTS)
    only_outliers[list(bad)] = 1.0
    with pytest.raises(ClairError, match="sum to 0"):
        result.shared_update(only_outliers)
    # Every row outlying: a tiny lam moves everything to S and leaves no shared subspace.
    with pytest.raises(ClairError, match="no shared subspace was recovered from the 20 rows"):
        decompose(updates, lam=1e-3).shared_update()


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_noisy_honest_rows_stay_and_random_rows_of_the_same_length_are_flagged(seed):
    # Real clients' updates are only near the shared subspace: here each honest row keeps about 70% of its
    # norm outside it (MiniLM's hospitals kept 40-85%), and two random rows have the median honest norm, so
    # neither length nor a cut on the sparse share tells them apart; the share of a row the subspace
    # explains does (honest ~0.7, random ~sqrt(1 / 2000)).
    rng = np.random.default_rng(seed)
    dims, clients = 2000, 10
    direction = rng.standard_normal(dims)
    direction /= np.linalg.norm(direction)
    clean = rng.uniform(0.5, 1.5, size=(clients, 1)) * direction
    noise = rng.standard_normal((clients, dims))
    noise *= np.linalg.norm(clean, axis=1, keepdims=True) / np.linalg.norm(noise, axis=1, keepdims=True)
    updates = clean + noise
    bad = (2, 7)
    for i in bad:
        outlier = rng.standard_normal(dims)
        updates[i] = outlier * (np.median(np.linalg.norm(updates, axis=1)) / np.linalg.norm(outlier))

    result = decompose(updates)

    assert result.flagged == bad
    honest = np.setdiff1d(np.arange(clients), bad)
    assert result.scores[honest].max() > 0.5  # a fixed cut on ||S_i|| / ||M_i|| would flag honest rows
    assert result.fit[honest].min() > 0.5 and result.fit[list(bad)].max() < 0.1
    assert result.subspace.shape == (dims, 1)
    assert abs(float(result.subspace[:, 0] @ direction)) > 0.9


def test_more_contaminated_than_honest_rows_is_beyond_the_rule():
    # The cut is relative to the median row, so it needs a benign majority (as CLAIR's identifiability
    # does): with twelve outliers among twenty the median row is an outlier and they are not told apart.
    updates, _, _, bad = planted(23, contaminated=12)
    assert set(decompose(updates).flagged) != set(bad)
