"""FedRot-LoRA alignment: Procrustes rotations, geodesic softening, and the FedIT error it removes."""

import numpy as np
import pytest
import scipy.linalg

from protocol.fedrot import AlignmentError, align, procrustes_rotation, soften
from protocol.ffa import fedit_mismatch


def random_rotation(rng: np.random.Generator, size: int) -> np.ndarray:
    # QR of a Gaussian matrix with the signs of R's diagonal moved into Q is Haar on O(n) (Mezzadri 2007);
    # flipping one column when the determinant is -1 gives a uniform rotation.
    q, r = np.linalg.qr(rng.standard_normal((size, size)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def objective(rotation: np.ndarray, source: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(rotation @ source - reference))


def test_procrustes_recovers_a_planted_rotation():
    # Prepare
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((5, 40))
    planted = random_rotation(rng, 5)
    source = planted.T @ reference  # so that planted @ source == reference exactly

    # Execute
    rotation = procrustes_rotation(source, reference)

    # Assert
    np.testing.assert_allclose(rotation, planted, atol=1e-10)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(5), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_procrustes_matches_scipy_when_the_optimum_is_a_rotation(seed):
    rng = np.random.default_rng(seed)
    source = rng.standard_normal((4, 30))
    reference = rng.standard_normal((4, 30))
    # scipy solves min ||X Omega - Y|| over all orthogonal Omega; R source ~ reference is its transpose.
    omega, _ = scipy.linalg.orthogonal_procrustes(source.T, reference.T)
    rotation = procrustes_rotation(source, reference)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-12)
    if np.linalg.det(omega) > 0:
        np.testing.assert_allclose(rotation, omega.T, atol=1e-10)
    else:
        # scipy's optimum is a reflection: the best rotation can only do worse, never better.
        assert objective(rotation, source, reference) >= objective(omega.T, source, reference) - 1e-12


def test_procrustes_picks_the_best_rotation_when_a_reflection_fits_better():
    # In 2-D every rotation is one angle, so a fine grid gives the optimum independently of the SVD.
    rng = np.random.default_rng(7)
    reference = rng.standard_normal((2, 25))
    mirror = np.diag([1.0, -1.0])
    source = mirror @ reference + 0.1 * rng.standard_normal((2, 25))
    rotation = procrustes_rotation(source, reference)
    angles = np.linspace(-np.pi, np.pi, 200_001)
    grid = [np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) for t in angles[::50]]
    best_on_grid = min(objective(r, source, reference) for r in grid)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-12)
    assert objective(rotation, source, reference) <= best_on_grid + 1e-9
    assert objective(rotation, source, reference) > objective(mirror, source, reference)


def test_procrustes_keeps_the_basis_when_the_reference_is_zero():
    source = np.random.default_rng(1).standard_normal((3, 8))
    np.testing.assert_array_equal(procrustes_rotation(source, np.zeros((3, 8))), np.eye(3))


def test_soften_endpoints_and_midpoint():
    rotation = random_rotation(np.random.default_rng(2), 6)
    np.testing.assert_array_equal(soften(rotation, strength=0.0), np.eye(6))
    np.testing.assert_allclose(soften(rotation, strength=1.0), rotation, atol=1e-12)
    half = soften(rotation, strength=0.5)
    np.testing.assert_allclose(half.T @ half, np.eye(6), atol=1e-10)
    assert np.linalg.det(half) == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(half @ half, rotation, atol=1e-10)


@pytest.mark.parametrize("size", [2, 3, 5, 8])
def test_soften_walks_one_geodesic(size):
    # Points of a one-parameter subgroup compose by adding their parameters.
    rotation = random_rotation(np.random.default_rng(size), size)
    quarter = soften(rotation, strength=0.25)
    np.testing.assert_allclose(np.linalg.matrix_power(quarter, 4), rotation, atol=1e-10)
    np.testing.assert_allclose(
        soften(rotation, strength=0.3) @ soften(rotation, strength=0.45),
        soften(rotation, strength=0.75),
        atol=1e-10,
    )


@pytest.mark.parametrize("size", [2, 4])
def test_soften_stays_real_through_a_half_turn(size):
    # -I is a rotation in even dimension whose eigenvalues are all -1, where the principal logarithm is
    # complex; a quarter of the way must be a real rotation whose fourth power is -I.
    quarter = soften(-np.eye(size), strength=0.25)
    assert quarter.dtype == np.float64
    np.testing.assert_allclose(quarter.T @ quarter, np.eye(size), atol=1e-12)
    np.testing.assert_allclose(np.linalg.matrix_power(quarter, 4), -np.eye(size), atol=1e-10)


def test_soften_refuses_a_reflection_or_a_non_orthogonal_matrix():
    with pytest.raises(AlignmentError, match="determinant"):
        soften(np.diag([1.0, -1.0]), strength=0.5)
    with pytest.raises(AlignmentError, match="orthogonal"):
        soften(2 * np.eye(3), strength=0.5)
    with pytest.raises(AlignmentError, match="strength"):
        soften(np.eye(3), strength=1.5)


@pytest.mark.parametrize("round_index", range(6))
@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0])
def test_align_leaves_the_product_unchanged(round_index, strength):
    rng = np.random.default_rng(100 + round_index)
    b, a = rng.standard_normal((12, 4)), rng.standard_normal((4, 9))
    b_ref, a_ref = rng.standard_normal((12, 4)), rng.standard_normal((4, 9))
    b_new, a_new = align(b, a, b_ref=b_ref, a_ref=a_ref, round_index=round_index, strength=strength)
    np.testing.assert_allclose(b_new @ a_new, b @ a, atol=1e-10)


def test_round_zero_changes_nothing():
    rng = np.random.default_rng(3)
    b, a = rng.standard_normal((7, 3)), rng.standard_normal((3, 5))
    b_new, a_new = align(b, a, b_ref=np.ones((7, 3)), a_ref=np.ones((3, 5)), round_index=0)
    np.testing.assert_array_equal(b_new, b)
    np.testing.assert_array_equal(a_new, a)


def test_odd_rounds_align_a_and_even_rounds_align_b():
    rng = np.random.default_rng(4)
    b, a = rng.standard_normal((10, 3)), rng.standard_normal((3, 8))
    b_ref, a_ref = rng.standard_normal((10, 3)), rng.standard_normal((3, 8))
    _, a_odd = align(b, a, b_ref=b_ref, a_ref=a_ref, round_index=1)
    b_even, _ = align(b, a, b_ref=b_ref, a_ref=a_ref, round_index=2)
    # The identity is a candidate rotation, so the aligned factor is never further from its reference.
    assert np.linalg.norm(a_odd - a_ref) < np.linalg.norm(a - a_ref)
    assert np.linalg.norm(b_even - b_ref) < np.linalg.norm(b - b_ref)


def rotated_clients(seed: int, *, clients: int = 6, noise: float = 1e-3):
    """Clients holding one true update `B0 A0` in random latent bases, plus small noise."""
    rng = np.random.default_rng(seed)
    b0, a0 = rng.standard_normal((32, 4)), rng.standard_normal((4, 24))
    bs, as_ = [], []
    for _ in range(clients):
        rotation = random_rotation(rng, 4)
        bs.append(b0 @ rotation.T + noise * rng.standard_normal(b0.shape))
        as_.append(rotation @ a0 + noise * rng.standard_normal(a0.shape))
    return b0, a0, bs, as_


@pytest.mark.parametrize("round_index", [1, 2, 3, 4])
def test_alignment_removes_the_factor_averaging_error(round_index):
    # Prepare
    b0, a0, bs, as_ = rotated_clients(seed=round_index)
    before = np.linalg.norm(fedit_mismatch(bs, as_))

    # Execute
    aligned = [align(b, a, b_ref=b0, a_ref=a0, round_index=round_index) for b, a in zip(bs, as_, strict=True)]
    after = np.linalg.norm(fedit_mismatch([b for b, _ in aligned], [a for _, a in aligned]))

    # Assert: unaligned, the rotated factors cancel (error ~45); aligned, what is left is second order in
    # the 1e-3 noise (~2e-5 measured), so the factor is ~2e6.
    assert before / after > 1e4
    for (b_new, a_new), b, a in zip(aligned, bs, as_, strict=True):
        np.testing.assert_allclose(b_new @ a_new, b @ a, atol=1e-10)


def test_round_zero_leaves_the_factor_averaging_error():
    b0, a0, bs, as_ = rotated_clients(seed=9)
    aligned = [align(b, a, b_ref=b0, a_ref=a0, round_index=0) for b, a in zip(bs, as_, strict=True)]
    after = np.linalg.norm(fedit_mismatch([b for b, _ in aligned], [a for _, a in aligned]))
    assert after == np.linalg.norm(fedit_mismatch(bs, as_))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(b=np.ones((5, 3)), a=np.ones((2, 4))), "rank mismatch"),
        (dict(b_ref=np.ones((5, 2))), "b_ref"),
        (dict(a_ref=np.ones((3, 5))), "a_ref"),
        (dict(a=np.ones(4)), "a must be a 2-D matrix"),
        (dict(b=np.full((5, 3), np.nan)), "b must be finite"),
        (dict(round_index=-1), "round_index"),
        (dict(strength=-0.1), "strength"),
    ],
)
def test_align_rejects_bad_input(kwargs, message):
    args = dict(
        b=np.ones((5, 3)), a=np.ones((3, 4)), b_ref=np.ones((5, 3)), a_ref=np.ones((3, 4)), round_index=1
    )
    args.update(kwargs)
    b, a = args.pop("b"), args.pop("a")
    with pytest.raises(AlignmentError, match=message):
        align(b, a, **args)


def test_procrustes_rejects_mismatched_shapes():
    with pytest.raises(AlignmentError, match="reference"):
        procrustes_rotation(np.ones((3, 4)), np.ones((4, 4)))
