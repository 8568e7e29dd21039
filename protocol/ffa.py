"""FFA-LoRA maths shared by every tier: the frozen basis `A`, rank padding and the flat update vector.

FFA-LoRA (Sun et al., 2024, arXiv:2403.12313) freezes LoRA's `A` at a random initialisation shared by all
clients and trains only `B`. The update of a module is `dW = s * B A` with a fixed scaling `s`, so the
mean of the clients' products equals the product of the mean `B` with `A`: aggregation is exact and
linear, which is what additive homomorphic encryption computes.

Nobody ever sends `A`: every party rebuilds `A_max` (`r_max` rows) from
`(seed, basis_version, module name, shape)`. A client of rank `r` uses the first `r` rows, and its
`dB` (`out x r`) is zero-padded to `out x r_max`, so mixed ranks still sum exactly.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from protocol.messages import RankPolicy, RankPolicyKind

BASIS_DOMAIN = b"fedlora/ffa-basis/v1"
# Names of the classification head's tensors in the update vector (after every LoRA `B`).
HEAD_WEIGHT = "head.weight"
HEAD_BIAS = "head.bias"


class LayoutError(ValueError):
    """A tensor or vector does not match the federation's adapter layout."""


def _basis_seed(seed: int, basis_version: int, module: str, shape: tuple[int, int]) -> list[int]:
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if basis_version < 0:
        raise ValueError(f"basis_version must be non-negative, got {basis_version}")
    material = b"|".join(
        [BASIS_DOMAIN, str(seed).encode(), str(basis_version).encode(), module.encode(), b"%dx%d" % shape]
    )
    digest = hashlib.sha256(material).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 32, 4)]


def frozen_basis(*, seed: int, basis_version: int, module: str, r_max: int, in_features: int) -> np.ndarray:
    """`A_max` of one LoRA module: `r_max x in_features` float32, identical on every machine.

    Entries are uniform in `[-1/sqrt(in_features), 1/sqrt(in_features)]`, the bound of peft's default
    Kaiming-uniform init with `a = sqrt(5)`, so FFA-LoRA starts from the same distribution as LoRA.
    NumPy's PCG64 stream and its `random()` doubles are platform-independent, which a digest pins in a test.
    """
    if r_max < 1:
        raise ValueError(f"r_max must be at least 1, got {r_max}")
    if in_features < 1:
        raise ValueError(f"in_features must be at least 1, got {in_features}")
    shape = (r_max, in_features)
    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(_basis_seed(seed, basis_version, module, shape)))
    )
    bound = 1.0 / np.sqrt(in_features)
    return ((rng.random(shape) * 2.0 - 1.0) * bound).astype(np.float32)


def lora_scaling(*, alpha: float, r_max: int) -> float:
    """The one scaling `s` of `dW = s * B A` used by every client whatever its rank.

    peft scales by `alpha / r`; with mixed ranks that would give the same column of `B` a different
    meaning on different clients. Fixing `s = alpha / r_max` keeps padded columns comparable, so the
    padded sum is the sum of the clients' `dW`.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    return alpha / r_max


def client_lora_alpha(*, alpha: float, rank: int, r_max: int) -> float:
    """The `lora_alpha` to give peft for a rank-`rank` client so that `lora_alpha / rank = alpha / r_max`."""
    if not 1 <= rank <= r_max:
        raise ValueError(f"rank must lie in [1, {r_max}], got {rank}")
    return alpha * rank / r_max


def pad_delta(delta_b: np.ndarray, r_max: int) -> np.ndarray:
    """Zero-pad a rank-`r` delta `out x r` to `out x r_max` (columns beyond `r` are zero)."""
    if delta_b.ndim != 2:
        raise LayoutError(f"delta_b must be a 2-D matrix, got shape {delta_b.shape}")
    out, rank = delta_b.shape
    if rank > r_max:
        raise LayoutError(f"delta_b has rank {rank}, above r_max={r_max}")
    padded = np.zeros((out, r_max), dtype=delta_b.dtype)
    padded[:, :rank] = delta_b
    return padded


def unpad_delta(delta_b: np.ndarray, rank: int) -> np.ndarray:
    """The first `rank` columns of a padded `out x r_max` delta."""
    if delta_b.ndim != 2 or not 1 <= rank <= delta_b.shape[1]:
        raise LayoutError(f"cannot take rank {rank} of a matrix of shape {delta_b.shape}")
    return delta_b[:, :rank]


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders `layer.2` before `layer.10`: the canonical module order."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(name) if part)


@dataclass(frozen=True)
class Entry:
    """One tensor of the update vector: a LoRA module's padded `B` or a trained head parameter."""

    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


A_SUFFIX = ".lora_A"  # the layout entry of a module's `A`, for strategies that train it (FedIT, FedRot)


@dataclass(frozen=True)
class AdapterLayout:
    """The canonical order and shapes of everything a client uploads, as one flat vector.

    LoRA `B` matrices come first in natural module order, each padded to `r_max` columns; then, only for
    strategies that train `A` too, each module's `A` (`"{module}.lora_A"`, padded to `r_max` rows); then
    the trained head parameters in natural order. Two parties agree on the vector iff their digests agree.
    """

    lora: tuple[Entry, ...]
    head: tuple[Entry, ...]
    r_max: int
    lora_a: tuple[Entry, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        lora_out_features: Mapping[str, int],
        r_max: int,
        head_shapes: Mapping[str, Sequence[int]] | None = None,
        lora_in_features: Mapping[str, int] | None = None,
    ) -> AdapterLayout:
        """With `lora_in_features` (module -> input width) the layout also carries every module's `A`."""
        if r_max < 1:
            raise ValueError(f"r_max must be at least 1, got {r_max}")
        if not lora_out_features:
            raise ValueError("lora_out_features is empty: a layout needs at least one LoRA module")
        names = sorted(lora_out_features, key=natural_key)
        lora = tuple(Entry(name, (int(lora_out_features[name]), r_max)) for name in names)
        lora_a: tuple[Entry, ...] = ()
        if lora_in_features is not None:
            if set(lora_in_features) != set(names):
                raise ValueError(
                    f"lora_in_features names {sorted(lora_in_features)}, the modules are {names}"
                )
            lora_a = tuple(Entry(name + A_SUFFIX, (r_max, int(lora_in_features[name]))) for name in names)
        heads = head_shapes or {}
        head = tuple(
            Entry(name, tuple(int(d) for d in heads[name])) for name in sorted(heads, key=natural_key)
        )
        return cls(lora=lora, head=head, r_max=r_max, lora_a=lora_a)

    @property
    def trains_a(self) -> bool:
        return bool(self.lora_a)

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self.lora + self.lora_a + self.head

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.entries)

    @property
    def digest(self) -> str:
        text = ";".join(f"{e.name}:{'x'.join(map(str, e.shape))}" for e in self.entries)
        return hashlib.sha256(f"r_max={self.r_max};{text}".encode()).hexdigest()

    def flatten(
        self, tensors: Mapping[str, np.ndarray], *, ranks: Mapping[str, int] | None = None
    ) -> np.ndarray:
        """One float32 vector from `{name: tensor}`. LoRA factors of rank `< r_max` are zero-padded (`B`'s
        columns, `A`'s rows).

        `ranks` is only a check: when given, each LoRA delta must have exactly that many columns.
        """
        missing = [e.name for e in self.entries if e.name not in tensors]
        extra = sorted(set(tensors) - {e.name for e in self.entries})
        if missing or extra:
            raise LayoutError(f"tensors do not match the layout: missing {missing}, unexpected {extra}")
        parts: list[np.ndarray] = []
        for entry in self.lora:
            value = np.asarray(tensors[entry.name], dtype=np.float32)
            if value.ndim != 2 or value.shape[0] != entry.shape[0]:
                raise LayoutError(f"{entry.name}: expected shape ({entry.shape[0]}, r), got {value.shape}")
            if ranks is not None and value.shape[1] != ranks.get(entry.name, self.r_max):
                raise LayoutError(
                    f"{entry.name}: expected rank {ranks.get(entry.name)}, got {value.shape[1]}"
                )
            parts.append(pad_delta(value, self.r_max).ravel())
        for entry in self.lora_a:
            value = np.asarray(tensors[entry.name], dtype=np.float32)
            if value.ndim != 2 or value.shape[1] != entry.shape[1]:
                raise LayoutError(f"{entry.name}: expected shape (r, {entry.shape[1]}), got {value.shape}")
            parts.append(pad_delta(value.T, self.r_max).T.ravel())
        for entry in self.head:
            value = np.asarray(tensors[entry.name], dtype=np.float32)
            if value.shape != entry.shape:
                raise LayoutError(f"{entry.name}: expected shape {entry.shape}, got {value.shape}")
            parts.append(value.ravel())
        return np.concatenate(parts)

    def unflatten(self, vector: np.ndarray, *, rank: int | None = None) -> dict[str, np.ndarray]:
        """Back to `{name: tensor}`; with `rank`, `B` is cut to its first `rank` columns, `A` to its first
        `rank` rows."""
        vector = np.asarray(vector)
        if vector.shape != (self.size,):
            raise LayoutError(f"vector has shape {vector.shape}, the layout needs ({self.size},)")
        out: dict[str, np.ndarray] = {}
        offset = 0
        for entry in self.entries:
            value = vector[offset : offset + entry.size].reshape(entry.shape)
            offset += entry.size
            if rank is not None and entry in self.lora:
                value = unpad_delta(value, rank)
            elif rank is not None and entry in self.lora_a:
                value = unpad_delta(value.T, rank).T
            out[entry.name] = value.copy()
        return out

    def lora_column_mask(self, rank: int) -> np.ndarray:
        """1 where a rank-`rank` client can contribute, 0 in padded LoRA columns (of `B`) and rows (of
        `A`); head entries are 1."""
        if not 1 <= rank <= self.r_max:
            raise ValueError(f"rank must lie in [1, {self.r_max}], got {rank}")
        parts = []
        for entry in self.lora:
            mask = np.zeros(entry.shape, dtype=np.float32)
            mask[:, :rank] = 1.0
            parts.append(mask.ravel())
        for entry in self.lora_a:
            mask = np.zeros(entry.shape, dtype=np.float32)
            mask[:rank, :] = 1.0
            parts.append(mask.ravel())
        parts.extend(np.ones(entry.size, dtype=np.float32) for entry in self.head)
        return np.concatenate(parts)

    def initial_vector(self, *, seed: int, basis_version: int) -> np.ndarray:
        """Adapter version 0: `B` and the head zero and, when `A` is trained, `A` at the seeded basis
        (LoRA's initialisation, Hu et al. 2021: `A` random, `B` zero, so the adapter starts as a no-op)."""
        tensors: dict[str, np.ndarray] = {e.name: np.zeros(e.shape, dtype=np.float32) for e in self.entries}
        for entry in self.lora_a:
            module = entry.name.removesuffix(A_SUFFIX)
            tensors[entry.name] = frozen_basis(
                seed=seed,
                basis_version=basis_version,
                module=module,
                r_max=self.r_max,
                in_features=entry.shape[1],
            )
        return self.flatten(tensors)


def fedit_mismatch(
    b_list: Sequence[np.ndarray], a_list: Sequence[np.ndarray], weights: Sequence[float] | None = None
) -> np.ndarray:
    """FedIT's aggregation error `mean(B_i) mean(A_i) - mean(B_i A_i)` (FFA-LoRA paper, section 3).

    Zero when all `A_i` are equal, which is why freezing `A` makes the aggregate exact.
    With two equally weighted clients it equals `-1/4 (B_1 - B_2)(A_1 - A_2)`.
    """
    if len(b_list) != len(a_list) or not b_list:
        raise ValueError(
            f"need as many B as A matrices and at least one, got {len(b_list)} and {len(a_list)}"
        )
    w = np.full(len(b_list), 1.0 / len(b_list)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(b_list),) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"weights must be {len(b_list)} non-negative numbers summing to 1, got {weights}")
    b_mean = sum(wi * np.asarray(b, dtype=np.float64) for wi, b in zip(w, b_list, strict=True))
    a_mean = sum(wi * np.asarray(a, dtype=np.float64) for wi, a in zip(w, a_list, strict=True))
    product_mean = sum(
        wi * (np.asarray(b, dtype=np.float64) @ np.asarray(a, dtype=np.float64))
        for wi, b, a in zip(w, b_list, a_list, strict=True)
    )
    return np.asarray(b_mean @ a_mean - product_mean)


@dataclass(frozen=True)
class Rebased:
    """A module's update `B A` re-expressed at a lower common rank (seed 001's convergence stage)."""

    b: np.ndarray  # (out, rank): U_r S_r
    a: np.ndarray  # (rank, in): V_r^T, orthonormal rows: the new basis to broadcast
    singular_values: np.ndarray  # all of them, largest first
    rank: int

    @property
    def truncation_error(self) -> float:
        """`||B A - b a||_F`: by Eckart-Young, the root sum of squares of the discarded singular values."""
        return float(np.sqrt(np.sum(self.singular_values[self.rank :] ** 2)))


def rebase(b: np.ndarray, a: np.ndarray, *, rank: int) -> Rebased:
    """The best rank-`rank` factorisation of `b @ a` (Eckart and Young 1936): SVD `B A = U S V^T`, new
    `A = V_r^T` (orthonormal rows, the basis the cloud would broadcast as a new basis version) and new
    `B = U_r S_r`, so `b a` is the closest rank-`rank` matrix to `B A` in Frobenius norm."""
    b = np.asarray(b, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    if b.ndim != 2 or a.ndim != 2 or b.shape[1] != a.shape[0]:
        raise LayoutError(f"b {b.shape} and a {a.shape} are not the factors of one product")
    if not 1 <= rank <= min(b.shape[0], a.shape[1]):
        raise LayoutError(f"rank must lie in [1, {min(b.shape[0], a.shape[1])}], got {rank}")
    u, sigma, vt = np.linalg.svd(b @ a, full_matrices=False)
    return Rebased(b=u[:, :rank] * sigma[:rank], a=vt[:rank], singular_values=sigma, rank=rank)


def seeded_bases(
    layout: AdapterLayout, in_features: Mapping[str, int], *, seed: int, basis_version: int
) -> dict[str, np.ndarray]:
    """`A_max` of every LoRA module from the federation's seed: what every party rebuilds locally."""
    return {
        entry.name: frozen_basis(
            seed=seed,
            basis_version=basis_version,
            module=entry.name,
            r_max=layout.r_max,
            in_features=int(in_features[entry.name]),
        )
        for entry in layout.lora
    }


def basis_bytes(layout: AdapterLayout, bases: Mapping[str, np.ndarray]) -> bytes:
    """A basis on the wire: every module's `A_max` (`r_max x in_features`, row-major), float32
    little-endian, modules in the layout's order."""
    return b"".join(np.ascontiguousarray(bases[entry.name], dtype="<f4").tobytes() for entry in layout.lora)


def basis_sha256(layout: AdapterLayout, bases: Mapping[str, np.ndarray]) -> str:
    """A basis' digest, as round plans carry it: SHA-256 of `basis_bytes`, the bytes the cloud serves at
    `GET /federations/{fid}/basis/{version}`; a hospital computes the seeded one from the seed itself."""
    return hashlib.sha256(basis_bytes(layout, bases)).hexdigest()


def vector_from_wire(raw: bytes, length: int) -> np.ndarray:
    """An adapter vector as the cloud serves it (float32 little-endian, `GET .../adapters/{v}/vector`), as
    float32 values; raises `LayoutError` unless it holds exactly `length` values. (The cloud reads its own
    stored copy with `cloud_server.federations.vector_from_bytes`, which quarantines a bad record.)"""
    if len(raw) % 4:
        raise LayoutError(f"adapter vector: {len(raw)} bytes is not a whole number of float32 values")
    vector = np.frombuffer(raw, dtype="<f4")
    if vector.shape != (length,):
        raise LayoutError(f"adapter vector: the layout holds {length} values, got {vector.size}")
    return vector.astype(np.float32)


def basis_from_bytes(
    raw: bytes, layout: AdapterLayout, in_features: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """The inverse of `basis_bytes`; raises `LayoutError` when the size does not fit the layout or a value
    is not finite (a NaN or inf row of `A` would turn every forward pass into NaN)."""
    if len(raw) % 4:
        raise LayoutError(f"basis: {len(raw)} bytes is not a whole number of float32 values")
    values = np.frombuffer(raw, dtype="<f4")
    expected = sum(layout.r_max * int(in_features[entry.name]) for entry in layout.lora)
    if values.size != expected:
        raise LayoutError(f"basis: a basis for this layout holds {expected} values, got {values.size}")
    bad = int(values.size - np.isfinite(values).sum())
    if bad:
        raise LayoutError(f"basis: {bad} of its {values.size} values are not finite")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for entry in layout.lora:
        size = layout.r_max * int(in_features[entry.name])
        out[entry.name] = values[offset : offset + size].reshape(layout.r_max, -1).astype(np.float32)
        offset += size
    return out


@dataclass(frozen=True)
class RebasedAdapter:
    vector: np.ndarray  # float32: `B` of rank `rank` in the new basis (zero beyond), head unchanged
    bases: dict[str, np.ndarray]  # the new `A_max` per module: first `rank` rows from the SVD
    modules: dict[str, Rebased]

    @property
    def truncation_error(self) -> float:
        """Over all modules, `sqrt(sum ||B A - b a||_F^2)` (the update with its LoRA scaling left out)."""
        return float(np.sqrt(sum(m.truncation_error**2 for m in self.modules.values())))

    @property
    def kept_energy(self) -> float:
        total = sum(float(np.sum(m.singular_values**2)) for m in self.modules.values())
        kept = sum(float(np.sum(m.singular_values[: m.rank] ** 2)) for m in self.modules.values())
        return kept / total if total > 0 else 1.0


def rebase_adapter(
    layout: AdapterLayout, vector: np.ndarray, bases: Mapping[str, np.ndarray], *, rank: int
) -> RebasedAdapter:
    """Seed 001's third stage on a whole adapter: each module's `B A_max` re-based to `rank` (`rebase`).

    The new `A` rows are scaled to the old basis's mean row norm (and `B` inversely, so `b a` is unchanged):
    a hospital's gradient on `B` then has the size it had, and the learning rate keeps its meaning. Rows
    `rank..r_max-1` of each new `A_max` stay those of the old basis (used only if a rank grows again).
    """
    if layout.trains_a:
        raise LayoutError("re-basing needs a frozen A (strategy 'ffa'); this layout trains A")
    tensors = layout.unflatten(np.asarray(vector, dtype=np.float64))
    new_bases: dict[str, np.ndarray] = {}
    modules: dict[str, Rebased] = {}
    for entry in layout.lora:
        a_max = np.asarray(bases[entry.name], dtype=np.float64)
        result = rebase(tensors[entry.name], a_max, rank=rank)
        scale = float(np.mean(np.linalg.norm(a_max, axis=1))) or 1.0
        b = np.zeros_like(tensors[entry.name])
        b[:, :rank] = result.b / scale
        a_new = a_max.copy()
        a_new[:rank] = result.a * scale
        tensors[entry.name] = b
        new_bases[entry.name] = a_new.astype(np.float32)
        modules[entry.name] = result
    return RebasedAdapter(layout.flatten(tensors), new_bases, modules)


def initial_rank(policy: RankPolicy, *, num_examples: int, r_max: int, max_rank: int | None = None) -> int:
    """A client's rank at enrolment under `policy`, never above its own `max_rank` or `r_max`.

    `data_size` (seed 001: the base rank follows the amount of local data): the largest power of two at
    most `r_max * num_examples / examples_for_r_max`, at least `min_rank`. Powers of two keep the ranks
    few and comparable across clients.
    """
    cap = min(max_rank or r_max, r_max)
    if policy.kind is RankPolicyKind.FIXED:
        return cap
    share = r_max * num_examples / policy.examples_for_r_max
    rank = 2 ** math.floor(math.log2(share)) if share >= 1 else 1
    return max(1, min(cap, max(policy.min_rank, rank)))


def column_weights(layout: AdapterLayout, contributions: Sequence[tuple[int, float]]) -> np.ndarray:
    """Per coordinate, the total weight of the `(rank, weight)` contributions that can reach it.

    Column `j` of every padded `B` receives updates only from clients of rank above `j`; head entries from
    everyone. Dividing a sum by this vector (instead of the total weight) averages each column over the
    clients that trained it. The ranks are public (the round plan), so this is post-processing.
    """
    total = np.zeros(layout.size)
    for rank, weight in contributions:
        total += weight * layout.lora_column_mask(rank)
    return total


def column_energy(layout: AdapterLayout, update: np.ndarray) -> np.ndarray:
    """Per LoRA column `j < r_max`, the squared norm of column `j` of every module's `B` in `update`:
    how much of a round's global update each rank direction carried (public: the update is published)."""
    energy = np.zeros(layout.r_max)
    tensors = layout.unflatten(np.asarray(update, dtype=np.float64))
    for entry in layout.lora:
        energy += np.sum(tensors[entry.name] ** 2, axis=0)
    return energy


def grown_ranks(
    ranks: Mapping[str, int], caps: Mapping[str, int], *, energy: np.ndarray, threshold: float
) -> dict[str, int]:
    """Seed 001's growth stage from a signal the cloud may see: a client of rank `r` below its cap doubles
    its rank (up to the cap) when column `r - 1` of the global update carries at least `threshold` times
    the mean energy of columns `0..r-1`, i.e. its highest direction is in full use."""
    out = dict(ranks)
    for cid, rank in ranks.items():
        cap = caps.get(cid, rank)
        used = energy[:rank]
        mean = float(used.mean()) if used.size else 0.0
        if rank < cap and mean > 0 and float(energy[rank - 1]) >= threshold * mean:
            out[cid] = min(cap, 2 * rank)
    return out
