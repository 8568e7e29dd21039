"""FedRot-LoRA: rotate each client's LoRA factors toward the global ones before they are averaged.

A LoRA update `dW = B A` (`B`: `out x r`, `A`: `r x in`) is unchanged by any orthogonal `R`:
`(B R^T)(R A) = B A`. Clients that train both factors drift into rotated latent bases, and averaging `B`
and `A` separately (FedIT) then mixes factors that do not correspond, so `mean(B) mean(A)` falls far from
`mean(B A)` (Zhang, Kim, Cha, Vikalo 2026, "FedRot-LoRA: Mitigating Rotational Misalignment in Federated
LoRA"). Each client therefore rotates its factors toward the broadcast global factors before uploading:
the product it contributes is untouched and the server's rule stays a plain weighted mean.

The aggregation error itself is `protocol.ffa.fedit_mismatch`; its Frobenius norm is what alignment lowers.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

# How far from orthogonal (Frobenius norm of `R^T R - I`) a matrix handed to `soften` may be.
_ORTHOGONALITY_TOL = 1e-8


class AlignmentError(ValueError):
    """Factors or a rotation cannot be aligned as asked."""


def _matrix(name: str, value: np.ndarray) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2:
        raise AlignmentError(f"{name} must be a 2-D matrix, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise AlignmentError(f"{name} must be finite, got NaN or infinity in a matrix of shape {array.shape}")
    return array


def procrustes_rotation(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The rotation `R` in SO(r) minimising `||R @ source - reference||_F`, for `r x k` matrices.

    Orthogonal Procrustes (Schönemann 1966, "A generalized solution of the orthogonal Procrustes
    problem"): with `reference @ source.T = U S V^T`, the best orthogonal matrix is `U V^T`. When that
    is a reflection (determinant -1), flipping the sign of the last singular pair gives the best
    rotation instead (Umeyama 1991, "Least-squares estimation of transformation parameters between
    two point patterns", eq. 39), so `R` never mirrors the latent basis.
    """
    source = _matrix("source", source)
    reference = _matrix("reference", reference)
    if source.shape != reference.shape:
        raise AlignmentError(f"source has shape {source.shape} but reference has shape {reference.shape}")
    cross = reference @ source.T
    rank = cross.shape[0]
    if not np.any(cross):
        # Nothing to align to (e.g. a zero global factor): every rotation is optimal, keep the basis.
        return np.eye(rank)
    u, _, vt = np.linalg.svd(cross)
    signs = np.ones(rank)
    if np.linalg.det(u @ vt) < 0:
        signs[-1] = -1.0
    return np.asarray((u * signs) @ vt)


def _rotation_generator(rotation: np.ndarray) -> np.ndarray:
    """A real skew-symmetric `X` with `expm(X) = rotation`: a real matrix logarithm on SO(r).

    The real Schur form of an orthogonal matrix is block diagonal with 2 x 2 plane rotations and 1 x 1
    blocks of +1 or -1 (Gantmacher, "The Theory of Matrices", vol. 1, ch. IX). Each plane rotation by
    `theta` contributes `theta` in its plane; eigenvalues -1 come in pairs in SO(r), and each pair is a
    half-turn. Unlike `scipy.linalg.logm` this stays real when an eigenvalue is exactly -1.
    """
    schur, basis = scipy.linalg.schur(rotation, output="real")
    size = rotation.shape[0]
    generator = np.zeros((size, size))
    half_turns: list[int] = []
    i = 0
    while i < size:
        if i + 1 < size and schur[i + 1, i] != 0.0:
            sine = (schur[i + 1, i] - schur[i, i + 1]) / 2.0
            cosine = (schur[i, i] + schur[i + 1, i + 1]) / 2.0
            angle = math.atan2(sine, cosine)
            generator[i + 1, i], generator[i, i + 1] = angle, -angle
            i += 2
            continue
        if schur[i, i] < 0.0:
            half_turns.append(i)
        i += 1
    for first, second in zip(half_turns[::2], half_turns[1::2], strict=True):
        generator[second, first], generator[first, second] = math.pi, -math.pi
    return np.asarray(basis @ generator @ basis.T)


def soften(rotation: np.ndarray, *, strength: float) -> np.ndarray:
    """The point a fraction `strength` of the way along the geodesic of SO(r) from the identity to
    `rotation`: `expm(strength * logm(rotation))`, real and orthogonal.

    `strength = 0` keeps the client's basis, `1` applies the full alignment; in between the rotation
    angle in every invariant plane is scaled by `strength`, so `soften(R, strength=0.5)` squared is `R`.
    """
    if not 0.0 <= strength <= 1.0:
        raise AlignmentError(f"strength must lie in [0, 1], got {strength}")
    rotation = _matrix("rotation", rotation)
    size = rotation.shape[0]
    if rotation.shape != (size, size):
        raise AlignmentError(f"rotation must be square, got shape {rotation.shape}")
    drift = float(np.linalg.norm(rotation.T @ rotation - np.eye(size)))
    if drift > _ORTHOGONALITY_TOL:
        raise AlignmentError(f"rotation must be orthogonal, got ||R^T R - I||_F = {drift:.3g}")
    determinant = float(np.linalg.det(rotation))
    if determinant < 0:
        raise AlignmentError(f"rotation must have determinant +1, got {determinant:.6g} (a reflection)")
    if strength == 0.0:
        return np.eye(size)
    if strength == 1.0:
        return rotation.copy()
    return np.asarray(scipy.linalg.expm(strength * _rotation_generator(rotation)))


def align(
    b: np.ndarray,
    a: np.ndarray,
    *,
    b_ref: np.ndarray,
    a_ref: np.ndarray,
    round_index: int,
    strength: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """`(b R^T, R a)`: a client's factors rotated toward the global `(b_ref, a_ref)`, `b @ a` unchanged.

    FedRot-LoRA alternates which factor it aligns (Zhang et al. 2026): round 0 has no global factors
    yet and keeps the identity; odd rounds align `A`, `R = argmin ||R a - a_ref||_F`; even rounds from
    2 align `B`, `R = argmin ||b R^T - b_ref||_F`, which is Procrustes on the transposes. A `strength`
    below 1 moves only that fraction of the way along the geodesic to `R` (`soften`). Results are float64.
    """
    b = _matrix("b", b)
    a = _matrix("a", a)
    b_ref = _matrix("b_ref", b_ref)
    a_ref = _matrix("a_ref", a_ref)
    if b.shape[1] != a.shape[0]:
        raise AlignmentError(
            f"rank mismatch: b has shape {b.shape} (rank {b.shape[1]}), a has shape {a.shape}"
        )
    if b_ref.shape != b.shape:
        raise AlignmentError(f"b_ref must have the shape of b, {b.shape}, got {b_ref.shape}")
    if a_ref.shape != a.shape:
        raise AlignmentError(f"a_ref must have the shape of a, {a.shape}, got {a_ref.shape}")
    if round_index < 0:
        raise AlignmentError(f"round_index must be non-negative, got {round_index}")
    if not 0.0 <= strength <= 1.0:
        raise AlignmentError(f"strength must lie in [0, 1], got {strength}")
    if round_index == 0:
        return b.copy(), a.copy()
    source, reference = (a, a_ref) if round_index % 2 == 1 else (b.T, b_ref.T)
    rotation = soften(procrustes_rotation(source, reference), strength=strength)
    return b @ rotation.T, rotation @ a
