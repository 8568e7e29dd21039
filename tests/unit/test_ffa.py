"""FFA-LoRA maths: deterministic basis, padding, the flat update vector, FedIT's mismatch."""

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.ffa import (
    AdapterLayout,
    LayoutError,
    client_lora_alpha,
    fedit_mismatch,
    frozen_basis,
    lora_scaling,
    natural_key,
    pad_delta,
    rebase,
    unpad_delta,
)

MODULE = "base_model.model.bert.encoder.layer.0.attention.self.query"


def test_basis_digest_is_pinned():
    # Pinned on the development machine: any change to the generator, the seed derivation or the
    # distribution changes every federation's A and must bump the basis domain instead.
    a = frozen_basis(
        seed=0, basis_version=0, module="encoder.layer.0.attention.self.query", r_max=8, in_features=384
    )
    assert a.dtype == np.float32
    assert a.shape == (8, 384)
    assert hashlib.sha256(a.tobytes()).hexdigest() == (
        "b71163c5a461eb231cc1ef793e35af8ff5b1ca33f5fdca2fe1572bbc0d710444"
    )


def test_basis_depends_on_every_input():
    base = dict(seed=1, basis_version=0, module=MODULE, r_max=4, in_features=32)
    a = frozen_basis(**base)
    np.testing.assert_array_equal(a, frozen_basis(**base))
    for change in (dict(seed=2), dict(basis_version=1), dict(module=MODULE + "x"), dict(in_features=33)):
        other = frozen_basis(**{**base, **change})
        assert other.shape != a.shape or not np.array_equal(other, a), change


def test_basis_is_uniform_with_kaiming_bound():
    in_features = 384
    a = frozen_basis(seed=3, basis_version=0, module=MODULE, r_max=64, in_features=in_features)
    bound = 1 / np.sqrt(in_features)
    assert np.abs(a).max() <= bound
    # Uniform(-b, b) has mean 0 and std b / sqrt(3); 24,576 draws put both well inside these margins.
    assert abs(a.mean()) < 0.02 * bound
    assert a.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)


def test_scaling_is_rank_independent():
    assert lora_scaling(alpha=16, r_max=8) == 2.0
    for rank in (1, 2, 8):
        assert client_lora_alpha(alpha=16, rank=rank, r_max=8) / rank == 2.0


def test_pad_and_unpad_round_trip():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(5, 3)).astype(np.float32)
    padded = pad_delta(d, 8)
    assert padded.shape == (5, 8)
    np.testing.assert_array_equal(padded[:, 3:], 0)
    np.testing.assert_array_equal(unpad_delta(padded, 3), d)
    with pytest.raises(LayoutError, match="rank 9, above r_max=8"):
        pad_delta(np.zeros((5, 9)), 8)


def test_padded_sum_equals_sum_of_products():
    # The reason padding is exact: B_i (r_i columns) times the first r_i rows of A_max equals the padded B_i
    # times the whole A_max, so sum_i pad(B_i) A_max = sum_i B_i A_i.
    rng = np.random.default_rng(1)
    a_max = frozen_basis(seed=0, basis_version=0, module=MODULE, r_max=8, in_features=12).astype(np.float64)
    deltas = [rng.normal(size=(6, r)) for r in (1, 4, 8)]
    expected = sum(d @ a_max[: d.shape[1]] for d in deltas)
    actual = sum(pad_delta(d, 8) for d in deltas) @ a_max
    np.testing.assert_allclose(actual, expected, atol=1e-12)


def test_natural_order():
    names = ["l.10.q", "l.2.v", "l.2.q", "l.1.q"]
    assert sorted(names, key=natural_key) == ["l.1.q", "l.2.q", "l.2.v", "l.10.q"]


def _layout():
    return AdapterLayout.build(
        lora_out_features={"layer.10.value": 3, "layer.2.value": 2, "layer.2.query": 2},
        r_max=4,
        head_shapes={"classifier.weight": (2, 3), "classifier.bias": (2,)},
    )


def test_layout_order_size_and_digest():
    layout = _layout()
    assert [e.name for e in layout.entries] == [
        "layer.2.query",
        "layer.2.value",
        "layer.10.value",
        "classifier.bias",
        "classifier.weight",
    ]
    assert layout.size == 2 * 4 + 2 * 4 + 3 * 4 + 2 + 6
    assert layout.digest == _layout().digest
    other = AdapterLayout.build(lora_out_features={"layer.2.query": 2}, r_max=4)
    assert other.digest != layout.digest


def test_flatten_pads_and_unflatten_inverts():
    layout = _layout()
    rng = np.random.default_rng(2)
    tensors = {
        "layer.2.query": rng.normal(size=(2, 2)),
        "layer.2.value": rng.normal(size=(2, 2)),
        "layer.10.value": rng.normal(size=(3, 2)),
        "classifier.weight": rng.normal(size=(2, 3)),
        "classifier.bias": rng.normal(size=(2,)),
    }
    vec = layout.flatten(tensors, ranks={"layer.2.query": 2, "layer.2.value": 2, "layer.10.value": 2})
    assert vec.dtype == np.float32 and vec.shape == (layout.size,)
    # Hand-computed offsets: layer.2.query occupies [0, 8) row-major with 4 columns, of which 2 are padding.
    np.testing.assert_allclose(vec[0:2], tensors["layer.2.query"][0], rtol=1e-6)
    np.testing.assert_array_equal(vec[2:4], 0)
    np.testing.assert_allclose(vec[-6:], tensors["classifier.weight"].ravel(), rtol=1e-6)
    back = layout.unflatten(vec, rank=2)
    for name, value in tensors.items():
        np.testing.assert_allclose(back[name], value, rtol=1e-6)
    full = layout.unflatten(vec)
    assert full["layer.10.value"].shape == (3, 4)


def test_flatten_refuses_mismatches():
    layout = _layout()
    good = {e.name: np.zeros(e.shape) for e in layout.entries}
    with pytest.raises(LayoutError, match=r"missing \['classifier.bias'\]"):
        layout.flatten({k: v for k, v in good.items() if k != "classifier.bias"})
    with pytest.raises(LayoutError, match="unexpected"):
        layout.flatten({**good, "stray": np.zeros(1)})
    with pytest.raises(LayoutError, match=r"classifier\.weight: expected shape"):
        layout.flatten({**good, "classifier.weight": np.zeros((3, 2))})
    with pytest.raises(LayoutError, match="needs"):
        layout.unflatten(np.zeros(layout.size + 1))


def test_column_mask():
    layout = AdapterLayout.build(lora_out_features={"m": 2}, r_max=3, head_shapes={"h": (1,)})
    np.testing.assert_array_equal(layout.lora_column_mask(1), [1, 0, 0, 1, 0, 0, 1])


def test_fedit_mismatch_two_clients_closed_form():
    rng = np.random.default_rng(4)
    b1, b2 = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    a1, a2 = rng.normal(size=(2, 7)), rng.normal(size=(2, 7))
    expected = -0.25 * (b1 - b2) @ (a1 - a2)
    np.testing.assert_allclose(fedit_mismatch([b1, b2], [a1, a2]), expected, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=6), st.integers(min_value=0, max_value=10_000))
def test_fedit_mismatch_vanishes_with_shared_a(n_clients, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(3, 4))
    bs = [rng.normal(size=(5, 3)) for _ in range(n_clients)]
    weights = rng.dirichlet(np.ones(n_clients))
    np.testing.assert_allclose(fedit_mismatch(bs, [a] * n_clients, weights), 0, atol=1e-12)


def test_fedit_mismatch_validates_weights():
    with pytest.raises(ValueError, match="summing to 1"):
        fedit_mismatch([np.zeros((1, 1))] * 2, [np.zeros((1, 1))] * 2, [0.7, 0.7])


def test_rebasing_keeps_the_best_lower_rank_product_and_its_error_is_the_discarded_singular_values():
    rng = np.random.default_rng(8)
    b, a = rng.normal(size=(48, 8)), rng.normal(size=(8, 32))
    product = b @ a
    for rank in (1, 3, 8):
        rebased = rebase(b, a, rank=rank)
        error = np.linalg.norm(product - rebased.b @ rebased.a)
        sigma = np.linalg.svd(product, compute_uv=False)  # computed here, independently
        assert error == pytest.approx(np.sqrt(np.sum(sigma[rank:] ** 2)), abs=1e-9)
        assert rebased.truncation_error == pytest.approx(error, abs=1e-9)
        np.testing.assert_allclose(rebased.a @ rebased.a.T, np.eye(rank), atol=1e-10)  # orthonormal basis
    assert rebase(b, a, rank=8).truncation_error == pytest.approx(0.0, abs=1e-9)  # full rank: exact
