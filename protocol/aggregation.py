"""From the edges' ciphertext sums to the next global adapter: sum, decrypt the total only, noise, average.

Each edge's ciphertext is already the sum of at least `k` clients' pre-weighted deltas; the cloud adds them
homomorphically and decrypts only that global total. Central client-level DP (DP-FedAvg, McMahan et al.
2018, arXiv:1710.06963): every client clips its delta to norm `C` and weights it by at most 1, so one client
moves the sum by at most `C` plus what encoding its upload adds (`protocol.sensitivity`, which the ledger
charges); noise of standard deviation `z C` per coordinate goes on the sum (the cloud
draws it, or the clients did in shares: see `protocol.noise`), and only then is the sum divided by the total
weight `W` (post-processing; the participants and their weights are public to the cloud through the signed
manifests), or with `normalize_rank_columns` each LoRA column by the weight of the hospitals reaching it, so
the noise on the published mean differs by column (`noise_on_mean`). Coordinates that fewer than `k` of the round's hospitals reach (`protocol.reach`: mixed ranks)
are then published unchanged from the previous adapter, counted per sum the cloud decrypts on its own (the
on-time total, each late group); releasing fewer coordinates of the same noisy sum is post-processing too, so
the ledger's charge still holds. The cloud leaves out a late group that would hold back a column of the
on-time sum (`fold_in`) before it computes the round's noise, so what is left out is neither decrypted nor
charged.

Pure: no I/O, nothing imported from outside `protocol`. The cloud's `closing` reads the store, calls
`round_noise` and `aggregate`, and commits what they return.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.crypto import CryptoError, DecryptionRangeError, EncryptedVector, HEScheme, PackingError
from protocol.crypto.base import UIntArray
from protocol.crypto.params import HEParams
from protocol.ffa import AdapterLayout
from protocol.messages import Contribution, DropReason, FederationSpec, NoiseMechanism
from protocol.noise import distribution_for, lattice_draw
from protocol.reach import Reach, fits, reach, sum_reach
from protocol.samplers import LatticeSampler
from protocol.secagg.cohort import residues_from_bytes, ring_sum
from protocol.sensitivity import Upload, encoding_slack, norm_order, release_sensitivity
from protocol.strategies import AggregationError, AggregationStrategy, EdgeRow, RoundSum, RowStrategy


@dataclass(frozen=True)
class RoundNoise:
    """The noise on one round's released sum, in the units of the deltas (standard deviations)."""

    mechanism: NoiseMechanism
    multiplier: float  # the schedule's z for the round
    clip_norm: float
    distributed: bool
    client_std: float  # what the clients' shares add up to (0 without distributed noise)
    cloud_std: float  # what the cloud adds: all of it, or the top-up for missing shares
    shares_planned: int | None = None
    # How many clip norms one hospital can move the released sum by: one upload's reach with what its
    # encoding adds (`protocol.sensitivity`), more when a late upload of a hospital is released with its
    # fresh one.
    sensitivity: float = 1.0
    encoding_slack: float = 0.0  # the clip norms encoding adds to one upload, inside `sensitivity`
    shares_arrived: int = 0  # distributed noise: the shares inside the decrypted sum
    share_std: float = 0.0  # the largest of them
    # The shares inside the smallest sum the cloud holds on its own (one edge's aggregate): what it could
    # decrypt alone, so all the noise a curious cloud is sure to face.
    smallest_sum_shares: int = 0

    @property
    def target_std(self) -> float:
        return self.multiplier * self.clip_norm

    @property
    def realised_std(self) -> float:
        return math.hypot(self.client_std, self.cloud_std)

    @property
    def realised_multiplier(self) -> float:
        """Noise on the released sum over `C`: a Gaussian's std, a Laplace distribution's scale."""
        scale = (
            self.realised_std / math.sqrt(2.0)
            if self.mechanism is NoiseMechanism.LAPLACE
            else self.realised_std
        )
        return scale / (self.clip_norm * self.sensitivity)

    @property
    def decryptor_multiplier(self) -> float:
        """The noise the cloud saw in what it decrypted (it knows its own top-up)."""
        return self.client_std / (self.clip_norm * self.sensitivity)


def round_noise(
    spec: FederationSpec,
    *,
    multiplier: float,
    contributions: Sequence[Contribution],
    layout_size: int,
    shares_planned: int | None,
    late: Sequence[LateGroup] = (),
    sums: Sequence[Sequence[Contribution]] | None = None,
) -> RoundNoise:
    """The noise a round carries: the cloud's draw, or the contributed shares plus a top-up to `z C`; and
    how far one hospital can move the sum it goes on (`contributions` in time, `late` buckets).

    The shares are those the fresh contributions declare (`noise_share_std`; None: the client added none).
    `sums` splits the contributions into the ciphertexts the cloud holds apart (each edge's aggregate; None:
    one sum), since it can decrypt each on its own.
    """
    dp = spec.central_dp
    order = norm_order(dp.mechanism)
    uploads = [
        *(Upload(c.client_id, c.weight) for c in contributions),
        *(Upload(c.client_id, c.weight, group.factor) for group in late for c in group.contributions),
    ]
    sensitivity = release_sensitivity(
        uploads, he=spec.he, clip_norm=dp.clip_norm, size=layout_size, ord=order
    )
    slack = encoding_slack(spec.he, clip_norm=dp.clip_norm, size=layout_size, ord=order) / dp.clip_norm
    if multiplier <= 0 or not dp.noisy:
        return RoundNoise(
            NoiseMechanism.NONE,
            0.0,
            dp.clip_norm,
            False,
            0.0,
            0.0,
            sensitivity=sensitivity,
            encoding_slack=slack,
        )
    target = multiplier * dp.clip_norm
    if not dp.distributed:
        # Laplace: scale `z C` against the L1 sensitivity `C` (Dwork et al. 2006), so its std is sqrt(2) z C.
        std = target * math.sqrt(2.0) if dp.mechanism is NoiseMechanism.LAPLACE else target
        return RoundNoise(
            dp.mechanism,
            multiplier,
            dp.clip_norm,
            False,
            0.0,
            std,
            sensitivity=sensitivity,
            encoding_slack=slack,
        )
    shares = [s for s in (c.noise_share_std for c in contributions) if s]
    parts = sums if sums is not None else [contributions]
    smallest = min((sum(1 for c in part if c.noise_share_std) for part in parts), default=0)
    client = math.sqrt(sum(s * s for s in shares))
    top_up = math.sqrt(max(0.0, target**2 - client**2))
    # A top-up below one part in a million of the target is rounding in the shares' sizes, not a dropout.
    if top_up <= 1e-6 * target:
        top_up = 0.0
    return RoundNoise(
        dp.mechanism,
        multiplier,
        dp.clip_norm,
        True,
        client,
        top_up,
        shares_planned,
        shares_arrived=len(shares),
        share_std=max(shares, default=0.0),
        smallest_sum_shares=smallest,
        sensitivity=sensitivity,
        encoding_slack=slack,
    )


@dataclass(frozen=True)
class LateGroup:
    """The late buckets of one staleness `s` from every edge: uploads made for round `r - s`, weighted by
    `factor = decay ** s` after decryption (`FederationSpec.late_uploads`)."""

    staleness: int
    factor: float
    ciphertexts: Sequence[bytes | memoryview]
    contributions: Sequence[Contribution]  # as the hospitals weighted them, before the factor
    edges: Sequence[str]  # the edge each of `ciphertexts` came from, in their order

    def weighted(self) -> list[Contribution]:
        return [c.model_copy(update={"weight": c.weight * self.factor}) for c in self.contributions]


def fold_in(
    contributions: Sequence[Contribution], late: Sequence[LateGroup], *, k: int
) -> tuple[list[LateGroup], list[LateGroup]]:
    """The late groups to decrypt beside the on-time sum of `contributions`, and those left out of the round
    because decrypting them would hold back a column the on-time sum publishes (`protocol.reach.fits`)."""
    on_time = sum_reach(contributions, k=k)
    kept: list[LateGroup] = []
    left_out: list[LateGroup] = []
    for group in late:
        (kept if fits(sum_reach(group.contributions, k=k), on_time) else left_out).append(group)
    return kept, left_out


@dataclass(frozen=True)
class Aggregated:
    vector: np.ndarray  # the new global adapter, float32
    update_norm: float  # L2 norm of what was added to the previous global adapter (noise included)
    # The standard deviation of all the noise on a published coordinate of the mean, the largest of them:
    # the noise on the sum over the coordinate's divisor, which differs by column with
    # `normalize_rank_columns`.
    noise_std: float
    summands: int  # client encryptions inside the decrypted total
    flagged: tuple[str, ...] = ()  # edges a robust strategy judged contaminated
    decrypt_s: float | None = None  # seconds `decrypt` took on the on-time total (the HE metric)
    # LoRA columns of B (rows of A) from this index on were held back: fewer than `k` hospitals reach them.
    published_rank: int = 0
    held_back: int = 0  # how many coordinates were held back
    # Per LoRA column of B (row of A), the noise's standard deviation on it (0 where held back); () without
    # central noise.
    column_noise_std: tuple[float, ...] = ()


def aggregate(
    scheme: HEScheme[Any],
    ciphertexts: Sequence[bytes | memoryview],
    *,
    global_vector: np.ndarray,
    contributions: Sequence[Contribution],
    layout: AdapterLayout,
    strategy: AggregationStrategy,
    noise: RoundNoise,
    central: npt.NDArray[np.int64] | None,
    k: int,
    rows: Sequence[tuple[str, float]] | None = None,
    late: Sequence[LateGroup] = (),
    corrections: Sequence[bytes | memoryview | None] | None = None,
    workers: int | None = None,
) -> Aggregated:
    """The next global adapter from the edges' sums and late buckets, with every coordinate held back that a
    sum decrypted on its own (the on-time total, each late group) reaches with fewer than `k` hospitals.
    `ciphertexts`, `corrections` and each late group's ciphertexts are read one at a time, in order, each
    dropped once added (`fold`): a sequence that reads each item from a store when it is indexed keeps no
    more than two ciphertexts in memory. `workers`: the processes a decryption may use (`HEScheme.decrypt`).
    `central` is the cloud's noise in steps of the scheme's noise lattice (`draw_central`; None when the
    round asks the cloud for none): the decrypted sum is rounded to the lattice and the integers added
    (`on_lattice`). Raises `RefusedSumsError` naming the edges whose sums are out of range or do not
    unmask, `CryptoError` if a sum does not decrypt, `AggregationError` if the weights, the rows or the
    noise do not fit the sums."""
    reached = reach(layout, contributions, k=k, late=[group.contributions for group in late])
    contributions = [*contributions, *(c for group in late for c in group.weighted())]
    total_weight = float(sum(c.weight for c in contributions))
    if total_weight <= 0:
        raise AggregationError(f"the contributions' total weight must be positive, got {total_weight}")
    length = int(global_vector.size)
    if isinstance(strategy, RowStrategy):
        if late:
            raise AggregationError(
                f"strategy {strategy.kind.value!r} cannot take late buckets, got {len(late)}"
            )
        return _held_back(
            _by_rows(scheme, ciphertexts, global_vector=global_vector, rows=rows or [], strategy=strategy),
            global_vector,
            reached,
        )
    edges = [edge_id for edge_id, _ in rows] if rows else [str(i) for i in range(len(ciphertexts))]
    total = fold(scheme, ciphertexts, length=length)
    started = time.perf_counter()
    if scheme.ring_bits is None:
        noisy_sum = checked_sum(scheme, total, ciphertexts, edges=edges, k=k, workers=workers)
    else:
        fixes = corrections or [None] * len(ciphertexts)
        noisy_sum = unmasked_sum(scheme, total, ciphertexts, fixes, edges=edges, k=k, workers=workers)
    decrypt_s = time.perf_counter() - started
    summands = total.count
    del total  # the late groups' sums need the memory
    # Each staleness is decrypted on its own (an add-only context cannot scale a ciphertext) and weighted
    # in the clear; every bucket inside holds at least k uploads, and `reach` counts the group on its own.
    # It is range-checked as the on-time sum is: a bucket out of range costs its edge, not the round.
    for group in late:
        late_sum = fold(scheme, group.ciphertexts, length=length)
        summands += late_sum.count
        noisy_sum = noisy_sum + group.factor * checked_sum(
            scheme, late_sum, group.ciphertexts, edges=group.edges, k=k, workers=workers
        )
    if noise.cloud_std > 0:
        noisy_sum = on_lattice(noisy_sum, central, step=scheme.params.noise_step)
    previous = global_vector.astype(np.float64)
    round_sum = RoundSum(noisy_sum, contributions, layout)
    vector = strategy.next_global(previous, round_sum).astype(np.float32)
    noise_std, by_column = noise_on_mean(
        layout, strategy.divisor(round_sum), reached.held, std=noise.realised_std
    )
    result = Aggregated(
        vector=vector,
        update_norm=0.0,
        noise_std=noise_std,
        summands=summands,
        decrypt_s=decrypt_s,
        column_noise_std=by_column,
    )
    return _held_back(result, global_vector, reached)


def central_std(noise: RoundNoise, params: HEParams, *, size: int) -> float:
    """The std of the noise the cloud draws for `noise` on the lattice of `params.noise_step`.

    A sum that decrypts onto the lattice (packed Paillier's fixed-point sums) takes `noise.cloud_std` as is.
    Any other (CKKS, plaintext) is rounded to the lattice first (`on_lattice`: discrete noise on a sum off its
    lattice would tell neighbouring sums apart by their fractional parts), which moves each of the `d`
    coordinates by up to half a step, so one hospital's reach grows from `R = sensitivity * C` to at most
    `R + sqrt(d) step` (L2) or `R + d step` (L1). The draw is widened so that the noise on the sum over the
    grown reach is no less than the ledger's `realised_std / R`."""
    if noise.cloud_std <= 0 or params.lattice_step is not None:
        return noise.cloud_std
    step = params.noise_step
    reach = noise.sensitivity * noise.clip_norm
    slack = size * step if noise.mechanism is NoiseMechanism.LAPLACE else math.sqrt(size) * step
    widened = noise.realised_std * (reach + slack) / reach
    return math.sqrt(widened**2 - noise.client_std**2)


def draw_central(
    noise: RoundNoise, params: HEParams, *, size: int, sampler: LatticeSampler
) -> npt.NDArray[np.int64] | None:
    """The cloud's noise for a round, in steps of `params.noise_step` (None when it adds none): `central_std`
    drawn from the round's distribution (a top-up of shares follows theirs: Skellam under packed Paillier)."""
    if noise.cloud_std <= 0:
        return None
    distribution = distribution_for(noise.mechanism, params, distributed=noise.distributed)
    std = central_std(noise, params, size=size)
    return lattice_draw(distribution, std=std, size=size, sampler=sampler, step=params.noise_step)


def on_lattice(
    values: np.ndarray, central: npt.NDArray[np.int64] | None, *, step: float
) -> npt.NDArray[np.float64]:
    """`values` rounded to the lattice of `step`, plus the integer noise `central` (`draw_central`), in the
    deltas' units: every noisy coordinate is an integer number of steps, whatever the noise."""
    if central is None or central.shape != values.shape:
        got = None if central is None else central.shape
        raise AggregationError(f"the central noise must hold {values.size} integers, got {got}")
    return (np.rint(values / step).astype(np.int64) + central).astype(np.float64) * step


def noise_on_mean(
    layout: AdapterLayout, divisor: np.ndarray, held: np.ndarray, *, std: float
) -> tuple[float, tuple[float, ...]]:
    """The standard deviation of the noise on the published mean, the largest over its coordinates and per
    LoRA column, when noise of `std` per coordinate went on the sum and each coordinate was divided by
    `divisor` (the strategy's: with `normalize_rank_columns` a high column's divisor is the weight of the
    few hospitals reaching it, so its noise is larger). Held-back coordinates carry none of this round's
    noise; () per column without noise."""
    if std <= 0:
        return 0.0, ()
    on_mean = np.divide(std, divisor, out=np.zeros(layout.size), where=(divisor > 0) & ~held)
    tensors = layout.unflatten(on_mean)
    by_column = np.zeros(layout.r_max)
    for entry in layout.lora:  # B: out x r_max
        by_column = np.maximum(by_column, tensors[entry.name].max(axis=0))
    for entry in layout.lora_a:  # A: r_max x in
        by_column = np.maximum(by_column, tensors[entry.name].max(axis=1))
    return float(on_mean.max(initial=0.0)), tuple(float(x) for x in by_column)


class RefusedSumsError(CryptoError):
    """Some edges' sums decrypt to values no honest sum of theirs can hold: the round goes on without them,
    their uploads dropped for `reason`. `edges` names them."""

    reason: DropReason

    def __init__(self, edges: Sequence[str], message: str) -> None:
        super().__init__(message)
        self.edges = tuple(edges)


class MaskedSumError(RefusedSumsError):
    """Some edges' sums decrypt, with their mask corrections, to values no honest cohort can sum to: their
    masks did not cancel (a forged, replayed or partial sum, or a wrong correction)."""

    reason = DropReason.MASKING_FAILED

    def __init__(self, edges: Sequence[str]) -> None:
        super().__init__(
            edges,
            f"the sums of edges {', '.join(edges)} do not unmask: their values lie outside what their "
            "cohorts can sum to (masks that did not cancel)",
        )


class OutOfRangeSumError(RefusedSumsError):
    """Some edges' packed sums decrypt to a slot above what their count of encryptions can sum to, or with
    bits set above the last slot: a hospital in them encoded a value outside the fixed-point range (one
    that carries into a neighbouring slot, or past the last one)."""

    reason = DropReason.OUT_OF_RANGE

    def __init__(self, edges: Sequence[str], detail: str) -> None:
        super().__init__(
            edges,
            f"the sums of edges {', '.join(edges)} are out of range: {detail}",
        )


def fold(
    scheme: HEScheme[Any], ciphertexts: Sequence[bytes | memoryview], *, length: int
) -> EncryptedVector[Any]:
    """The homomorphic sum of the serialised `ciphertexts` of `length` values each, deserialised one at a
    time and dropped once added: in memory, the running sum and the one being added, however many there
    are. Raises `CiphertextError` on one that does not parse, `CryptoError` on none."""
    total: EncryptedVector[Any] | None = None
    for index in range(len(ciphertexts)):
        part = scheme.deserialize(ciphertexts[index], expected_length=length)
        if total is None:
            total = part  # deserialised here, so owned: it can be the running sum
        else:
            scheme.add_into(total, part)
        del part
    if total is None:
        raise CryptoError("cannot sum an empty sequence of ciphertexts")
    return total


def checked_sum(
    scheme: HEScheme[Any],
    total: EncryptedVector[Any],
    ciphertexts: Sequence[bytes | memoryview],
    *,
    edges: Sequence[str],
    k: int,
    workers: int | None = None,
) -> np.ndarray:
    """The decrypted `total` of the edges' serialised sums `ciphertexts`, range-checked per value
    (`HEScheme.in_range`) and, packed, per slot (`packing.unpack`). When the check fails, each sum of at
    least `k` encryptions is read again and decrypted on its own to name the edges whose sums are out of
    range: `OutOfRangeSumError`, so that one hospital's bad encoding costs its own region's sum, not the
    round. A sum of fewer than `k` is never decrypted on its own (`_alone`): it is named with them."""
    try:
        return scheme.decrypt(total, workers=workers)
    except (PackingError, DecryptionRangeError) as e:
        detail = str(e)
    failed = []
    for index, edge_id in enumerate(edges):
        part = _alone(scheme, ciphertexts[index], length=total.length, k=k)
        if part is None:
            failed.append(edge_id)
            continue
        try:
            scheme.decrypt(part, workers=workers)
        except (PackingError, DecryptionRangeError):
            failed.append(edge_id)
        del part
    raise OutOfRangeSumError(failed or list(edges), detail)


def _alone(
    scheme: HEScheme[Any], ciphertext: bytes | memoryview, *, length: int, k: int
) -> EncryptedVector[Any] | None:
    """`ciphertext` parsed to be decrypted on its own, or None when it holds fewer than `k` encryptions:
    decrypted alone it would show fewer than `k` hospitals' uploads (the store may hold such a value: the
    cloud's close checks each stored sum, and this is the last line)."""
    part = scheme.deserialize(ciphertext, expected_length=length)
    return part if part.count >= k else None


def unmasked_sum(
    scheme: HEScheme[Any],
    total: EncryptedVector[Any],
    ciphertexts: Sequence[bytes | memoryview],
    corrections: Sequence[bytes | memoryview | None],
    *,
    edges: Sequence[str],
    k: int,
    workers: int | None = None,
) -> np.ndarray:
    """The values of `total`, the sum of masking cohorts' serialised sums `ciphertexts`: its ring residues
    decrypted once, every cohort's mask correction added (read one at a time into a running ring sum), and
    decoded with the range check. When the check fails, each sum is read again and decrypted on its own
    (each is a whole cohort's, so of at least `k` hospitals; one of fewer is named, never decrypted) to
    name the edges whose masks did not cancel: `MaskedSumError`."""
    bits = scheme.ring_bits
    assert bits is not None
    length = total.length
    if len(corrections) != len(ciphertexts):
        raise AggregationError(
            f"each of the {len(ciphertexts)} sums needs a mask correction, got {len(corrections)}"
        )
    fix = np.zeros(length, dtype=np.uint64)
    for index, edge_id in enumerate(edges):
        fix = ring_sum(
            [fix, _correction(corrections[index], edge_id, bits=bits, length=length)], bits, length
        )
    try:
        return scheme.decode_residues(
            ring_sum([scheme.decrypt_residues(total, workers=workers), fix], bits, length), count=total.count
        )
    except PackingError:
        pass
    failed = []
    for index, edge_id in enumerate(edges):
        part = _alone(scheme, ciphertexts[index], length=length, k=k)
        if part is None:
            failed.append(edge_id)
            continue
        own = _correction(corrections[index], edge_id, bits=bits, length=length)
        try:
            scheme.decode_residues(
                ring_sum([scheme.decrypt_residues(part, workers=workers), own], bits, length),
                count=part.count,
            )
        except PackingError:
            failed.append(edge_id)
    raise MaskedSumError(failed or list(edges))


def _correction(correction: bytes | memoryview | None, edge_id: str, *, bits: int, length: int) -> UIntArray:
    """An edge's mask correction as ring residues; `MaskedSumError` naming it when it sent none."""
    if correction is None:
        raise MaskedSumError([edge_id])
    return residues_from_bytes(bytes(correction), bits=bits, length=length)


def _held_back(result: Aggregated, global_vector: np.ndarray, reached: Reach) -> Aggregated:
    """`result` with the coordinates `reached` holds back put back to the previous adapter's, and its update
    norm taken over what is published."""
    vector = np.where(reached.held, global_vector.astype(np.float32), result.vector)
    norm = float(np.linalg.norm(vector.astype(np.float64) - global_vector.astype(np.float64)))
    return dataclasses.replace(
        result,
        vector=vector,
        update_norm=norm,
        published_rank=reached.rank,
        held_back=reached.held_back,
    )


def _by_rows(
    scheme: HEScheme[Any],
    ciphertexts: Sequence[bytes | memoryview],
    *,
    global_vector: np.ndarray,
    rows: Sequence[tuple[str, float]],
    strategy: RowStrategy,
) -> Aggregated:
    """A strategy over each edge's sum (plaintext federations only): `rows` names each serialised sum's
    edge and total weight, in the order of `ciphertexts`."""
    if len(rows) != len(ciphertexts):
        raise AggregationError(
            f"rows must name each of the {len(ciphertexts)} edge sums, got {len(rows)} rows"
        )
    previous = global_vector.astype(np.float64)
    edge_rows, summands = [], 0
    for index, (edge_id, weight) in enumerate(rows):
        part = scheme.deserialize(ciphertexts[index], expected_length=global_vector.size)
        edge_rows.append(EdgeRow(edge_id, scheme.decrypt(part), weight))
        summands += part.count
    vector, flagged = strategy.combine_rows(previous, edge_rows)
    return Aggregated(
        vector=vector.astype(np.float32),
        update_norm=0.0,
        noise_std=0.0,
        summands=summands,
        flagged=flagged,
    )
