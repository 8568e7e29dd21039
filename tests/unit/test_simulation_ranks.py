"""Seed 001's rank planners for the simulation (`fedlora.simulation_ranks`) and the macro AUC the
experiments report, each against figures worked out by hand."""

import itertools

import numpy as np
import pytest

from fedlora.simulation_ranks import (
    RankPlanError,
    RoundSeen,
    SeedRanks,
    VarianceRanks,
    data_size_policy,
    relative_variance,
)
from fedlora.simulation_rounds import macro_auc
from protocol.ffa import AdapterLayout

# Two LoRA modules with 3 output rows each, r_max 4; a head of 2 x 3 + 2.
LAYOUT = AdapterLayout.build(
    lora_out_features={"m0": 3, "m1": 3}, r_max=4, head_shapes={"head.weight": (2, 3), "head.bias": (2,)}
)
HEAD = 8  # head values, at the end of the vector


def _planner(grow_energy=None, rebase_rank=None, rebase_after=None):
    policy = data_size_policy(examples_for_r_max=100, grow_energy=grow_energy)
    return SeedRanks(policy, r_max=4, rebase_rank=rebase_rank, rebase_after=rebase_after)


def _update(column_energy):
    """An update whose LoRA column j carries `column_energy[j]` in all (split over both modules' rows)."""
    tensors = {}
    for name in ("m0", "m1"):
        b = np.zeros((3, 4))
        b[0, :] = np.sqrt(np.asarray(column_energy, dtype=float) / 2)
        tensors[name] = b
    tensors["head.weight"] = np.full((2, 3), 5.0)  # the head carries no column energy
    tensors["head.bias"] = np.zeros(2)
    return LAYOUT.flatten(tensors)


def test_first_rank_is_the_largest_power_of_two_under_the_data_share():
    # r_max * n / 100: 10 -> 0.4 (rank 1), 30 -> 1.2 (1), 50 -> 2 (2), 99 -> 3.96 (2), 100 -> 4, 400 -> 16 (cap 4).
    counts = {"a": 10, "b": 30, "c": 50, "d": 99, "e": 100, "f": 400}
    assert _planner().initial(counts, layout=LAYOUT) == {"a": 1, "b": 1, "c": 2, "d": 2, "e": 4, "f": 4}


def test_energy_growth_doubles_a_rank_whose_top_column_is_in_full_use():
    ranks = {"low": 1, "mid": 2, "top": 4}
    # Columns 0..3 carry 4, 4, 1, 1. low: column 0 vs mean 4 -> grows to 2. mid: column 1 = 4 >= mean 4 ->
    # grows to 4. top: already at r_max.
    seen = RoundSeen(0, ranks, _update([4.0, 4.0, 1.0, 1.0]), {})
    assert _planner(grow_energy=1.0).after_round(seen, layout=LAYOUT).ranks == {"low": 2, "mid": 4, "top": 4}
    # Columns 4, 1: mid's column 1 carries 1 < 1.0 x mean 2.5 -> stays.
    seen = RoundSeen(0, {"mid": 2}, _update([4.0, 1.0, 0.0, 0.0]), {})
    assert _planner(grow_energy=1.0).after_round(seen, layout=LAYOUT).ranks == {"mid": 2}


def test_rebasing_happens_once_at_its_round_and_then_nothing_grows():
    planner = _planner(grow_energy=0.01, rebase_rank=1, rebase_after=1)
    ranks = {"a": 1, "b": 4}
    update = _update([1.0, 1.0, 1.0, 1.0])
    first = planner.after_round(RoundSeen(0, ranks, update, {}), layout=LAYOUT)
    assert first.rebase_rank is None and first.ranks == {"a": 2, "b": 4}
    second = planner.after_round(RoundSeen(1, first.ranks, update, {}), layout=LAYOUT)
    assert second.rebase_rank == 1 and second.ranks == {"a": 1, "b": 1}
    third = planner.after_round(RoundSeen(2, second.ranks, update, {}), layout=LAYOUT)
    assert third.rebase_rank is None and third.ranks == {"a": 1, "b": 1}


def test_rebase_settings_are_checked():
    with pytest.raises(RankPlanError, match="rebase_rank 2 and rebase_after None"):
        _planner(rebase_rank=2)
    with pytest.raises(RankPlanError, match=r"rebase_rank must lie in \[1, r_max=4\], got 5"):
        _planner(rebase_rank=5, rebase_after=0)


def test_relative_variance_by_hand():
    # Uploads (1, 0) and (3, 0): mean (2, 0), squared deviations 1 and 1 -> mean 1; ||mean||^2 = 4.
    assert relative_variance([np.array([1.0, 0.0]), np.array([3.0, 0.0])]) == pytest.approx(0.25)
    assert relative_variance([np.array([1.0, 2.0])] * 3) == 0.0
    assert relative_variance([np.array([1.0]), np.array([-1.0])]) == float("inf")
    with pytest.raises(RankPlanError, match="at least 2 rounds, got 1"):
        relative_variance([np.array([1.0])])


def _lora_upload(values, head=0.0):
    vector = np.full(LAYOUT.size, head)
    vector[: LAYOUT.size - HEAD] = values
    return vector


def test_variance_growth_doubles_the_steadier_half():
    rng = np.random.default_rng(0)
    planner = VarianceRanks(_planner(rebase_rank=1, rebase_after=3))
    ranks = {"steady": 1, "noisy": 1, "mixed": 2}
    direction = rng.normal(size=LAYOUT.size - HEAD)
    uploads = [
        {
            "steady": _lora_upload(direction, head=100.0 * t),  # the head's drift does not count
            "noisy": _lora_upload(rng.normal(size=LAYOUT.size - HEAD)),
            "mixed": _lora_upload(direction + 0.5 * rng.normal(size=LAYOUT.size - HEAD)),
        }
        for t in range(2)
    ]
    update = np.zeros(LAYOUT.size)
    # Round 0: one upload each, no variance yet.
    assert planner.after_round(RoundSeen(0, ranks, update, uploads[0]), layout=LAYOUT).ranks == ranks
    step = planner.after_round(RoundSeen(1, ranks, update, uploads[1]), layout=LAYOUT)
    # steady: 0; mixed: small; noisy: large. The median is mixed's: steady and mixed double.
    variances = planner.variances[-1]
    assert variances["steady"] == 0.0 < variances["mixed"] < variances["noisy"]
    assert step.ranks == {"steady": 2, "noisy": 1, "mixed": 4}
    # Its re-basing round re-bases as the base planner does.
    rebased = planner.after_round(RoundSeen(3, step.ranks, update, uploads[1]), layout=LAYOUT)
    assert rebased.rebase_rank == 1 and set(rebased.ranks.values()) == {1}


def _pairwise_auc(positive, negative):
    """Mann-Whitney: the share of (positive, negative) pairs ranked the right way, ties counting half."""
    pairs = list(itertools.product(positive, negative))
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)


def test_macro_auc_is_the_mean_of_one_vs_rest_aucs():
    rng = np.random.default_rng(3)
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 0, 1, 2])
    probabilities = rng.dirichlet(np.ones(3), size=len(labels))
    by_hand = np.mean(
        [_pairwise_auc(probabilities[labels == c, c], probabilities[labels != c, c]) for c in range(3)]
    )
    assert macro_auc(labels, probabilities) == pytest.approx(by_hand)
    # A class missing from the labels: the mean over the classes present.
    missing = labels[labels != 1]
    kept = probabilities[labels != 1]
    by_hand = np.mean([_pairwise_auc(kept[missing == c, c], kept[missing != c, c]) for c in (0, 2)])
    assert macro_auc(missing, kept) == pytest.approx(by_hand)
    assert macro_auc(np.zeros(4, dtype=int), probabilities[:4]) is None
