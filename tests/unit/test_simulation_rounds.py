"""The simulation's own pieces: FedIT's relative mismatch, contamination, the edges' running sums."""

import numpy as np
import pytest
import torch

from client_agent.train import Features
from fedlora.simulation_rounds import (
    EdgeSums,
    contaminate,
    contaminated_hospitals,
    factor_mismatch,
    flipped,
    random_update,
)
from protocol.crypto import PlainParams, generate_scheme
from protocol.ffa import AdapterLayout

OUT = {"m.0": 3, "m.1": 4}
IN = {"m.0": 5, "m.1": 6}
HEAD = {"head.weight": (2, 5), "head.bias": (2,)}


def _factors(rng):
    return {
        **{name: rng.normal(size=(out, 2)) for name, out in OUT.items()},
        **{name + ".lora_A": rng.normal(size=(2, IN[name])) for name in IN},
        **{name: rng.normal(size=shape) for name, shape in HEAD.items()},
    }


def test_mismatch_of_two_hospitals_is_a_quarter_of_the_cross_term():
    # Prepare: two hospitals with their own B and A per module.
    layout = AdapterLayout.build(lora_out_features=OUT, r_max=2, head_shapes=HEAD, lora_in_features=IN)
    rng = np.random.default_rng(0)
    first, second = _factors(rng), _factors(rng)
    vectors = [layout.flatten(first), layout.flatten(second)]
    # float32 as the layout stores them, so that the expectation sees the same numbers.
    f = {k: v.astype(np.float32).astype(np.float64) for k, v in first.items()}
    s = {k: v.astype(np.float32).astype(np.float64) for k, v in second.items()}

    relative = factor_mismatch(layout, vectors, rank=2)

    # mean(B) mean(A) - mean(B A) = -(B1 - B2)(A1 - A2) / 4 for two equal weights.
    error = sum(np.sum(((f[m] - s[m]) @ (f[m + ".lora_A"] - s[m + ".lora_A"]) / 4) ** 2) for m in OUT)
    product = sum(np.sum(((f[m] @ f[m + ".lora_A"] + s[m] @ s[m + ".lora_A"]) / 2) ** 2) for m in OUT)
    assert relative == pytest.approx(np.sqrt(error / product), rel=1e-9)


def test_mismatch_with_one_frozen_a_is_zero():
    layout = AdapterLayout.build(lora_out_features=OUT, r_max=2, head_shapes=HEAD)
    rng = np.random.default_rng(1)
    vectors = [rng.normal(size=layout.size) for _ in range(5)]
    frozen = {name: rng.normal(size=(2, IN[name])) for name in OUT}

    assert factor_mismatch(layout, vectors, rank=2, frozen_a=frozen) < 1e-14
    with pytest.raises(ValueError, match="frozen_a"):
        factor_mismatch(layout, vectors, rank=2)


def test_a_random_update_has_the_benign_norm_times_the_scale_and_another_direction():
    delta = np.random.default_rng(2).normal(size=4000).astype(np.float32)

    noise = random_update(delta, scale=3.0, rng=np.random.default_rng(7))

    assert noise.dtype == np.float32
    assert np.linalg.norm(noise) == pytest.approx(3.0 * np.linalg.norm(delta), rel=1e-5)
    cosine = float(noise @ delta) / (np.linalg.norm(noise) * np.linalg.norm(delta))
    assert abs(cosine) < 5 / np.sqrt(delta.size)
    np.testing.assert_array_equal(noise, random_update(delta, scale=3.0, rng=np.random.default_rng(7)))
    np.testing.assert_array_equal(
        contaminate(delta, "flip", scale=2.0, rng=np.random.default_rng(0)), 2 * delta
    )


def test_flipped_labels_mirror_the_classes():
    features = Features(torch.zeros(4, 3, 2), torch.ones(4, 3), torch.tensor([0, 1, 2, 1]))

    assert flipped(features, num_labels=3).labels.tolist() == [2, 1, 0, 1]
    assert flipped(features, num_labels=2).hidden is features.hidden


def test_contaminated_hospitals_are_drawn_by_seed():
    names = [f"hospital-{c}" for c in "abcdef"]

    chosen = contaminated_hospitals(names, 2, seed=0)

    assert len(chosen) == 2 and set(chosen) <= set(names)
    assert list(chosen) == sorted(chosen, key=names.index)
    assert contaminated_hospitals(names, 2, seed=0) == chosen
    assert contaminated_hospitals(names, 0, seed=0) == ()
    assert len({contaminated_hospitals(names, 1, seed=s) for s in range(20)}) > 1
    with pytest.raises(ValueError, match="contaminated"):
        contaminated_hospitals(names, 7, seed=0)


def test_edge_sums_add_each_edges_uploads_and_forward_them_in_order():
    scheme = generate_scheme(PlainParams())
    uploads = [np.full(3, float(i)) for i in range(1, 5)]
    edges = EdgeSums(scheme, 3)

    for i, vector in enumerate(uploads):
        edges.add(f"edge-{i % 2 + 1}", scheme.serialize(scheme.encrypt(vector)), 0.5)
    ciphertexts, rows = edges.forwarded()

    assert rows == [("edge-1", 1.0), ("edge-2", 1.0)]
    sums = [scheme.decrypt(scheme.deserialize(c, expected_length=3)) for c in ciphertexts]
    np.testing.assert_allclose(sums, [np.full(3, 1.0 + 3.0), np.full(3, 2.0 + 4.0)])
    assert edges.add_s > 0
