"""What every party derives alike from a cohort's roster: who neighbours whom, the thresholds, the masks.

Neighbours (SecAgg+, Bell et al., CCS 2020): a cohort of up to `FULL_GRAPH_UP_TO` hospitals is a complete
graph, as in the original protocol (Bonawitz et al., CCS 2017). A larger one is a Harary graph: the
hospitals on a ring in an order drawn from the roster's digest (so nobody picks their neighbours), each
joined to the `degree / 2` nearest on either side, with `degree` about `6 log2 n`. A hospital masks with,
and shares its seeds among, its neighbours only, so each hospital's work grows with `log n`, not `n`.

Thresholds: a hospital's seeds are split so that any `t = d - floor(d / 3)` of its `d` neighbours rebuild
them, which tolerates a third of them dropping, and `t > d / 2`, so the edge cannot gather `t` self-mask
shares and `t` mask-key shares of one hospital from honest neighbours, each of which reveals only one.
A `SurvivorSet` is honoured only with signatures from a majority of the roster, and every hospital signs
one per cohort: two different lists cannot both collect a majority, so every honest hospital answers the
same list.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from protocol.secagg import primitives
from protocol.secagg.messages import CohortId, KeyAdvert, Roster, SurvivorSet
from protocol.secagg.primitives import SecAggError

FULL_GRAPH_UP_TO = 64
#: Verifies an Ed25519 signature by a hospital's enrolled identity: (client_id, payload, signature) -> ok.
Verifier = Callable[[str, bytes, bytes], bool]
UIntArray = npt.NDArray[np.uint64]


def degree_for(members: int) -> int:
    """Neighbours per hospital: everyone up to `FULL_GRAPH_UP_TO`, then an even `~6 log2 n`."""
    if members <= FULL_GRAPH_UP_TO:
        return members - 1
    return min(members - 1, 2 * math.ceil(3 * math.log2(members)))


def threshold_for(neighbours: int) -> int:
    """Shares that rebuild a hospital's seeds: all but a third of its neighbours (at least one)."""
    return max(1, neighbours - neighbours // 3)


def pair_sign(me: str, peer: str) -> int:
    """+1 for the lower client id of a pair, -1 for the higher: the two masks of a pair cancel."""
    return 1 if me < peer else -1


@dataclass(frozen=True)
class Cohort:
    """A closed roster and what follows from it."""

    roster: Roster
    min_survivors: int
    members: tuple[str, ...] = field(init=False)
    adverts: dict[str, KeyAdvert] = field(init=False)

    def __post_init__(self) -> None:
        adverts = {a.client_id: a for a in self.roster.adverts}
        object.__setattr__(self, "adverts", adverts)
        object.__setattr__(self, "members", tuple(sorted(adverts)))

    @property
    def cohort_id(self) -> CohortId:
        return self.roster.cohort

    @property
    def context(self) -> bytes:
        return self.roster.cohort.context()

    def check(self, verify: Verifier) -> None:
        """Raise `SecAggError` unless the roster is one a hospital may take part in: big enough for `k`,
        one advert per hospital, every advert signed by its hospital for this cohort, no key repeated."""
        ids = [a.client_id for a in self.roster.adverts]
        if len(ids) != len(set(ids)):
            raise SecAggError("the roster lists a hospital twice")
        if len(ids) < max(2, self.min_survivors):
            raise SecAggError(
                f"the roster has {len(ids)} hospitals; a cohort needs at least {self.min_survivors}"
            )
        keys = [k for a in self.roster.adverts for k in (a.share_key, a.mask_key)]
        if len(keys) != len(set(keys)):
            raise SecAggError("two adverts in the roster share a public key")
        for advert in self.roster.adverts:
            if advert.cohort != self.cohort_id:
                raise SecAggError(f"{advert.client_id}'s advert is for another cohort")
            if not verify(advert.client_id, advert.signing_payload(), advert.signature):
                raise SecAggError(f"{advert.client_id}'s advert is not signed by its enrolled identity")

    @cached_property
    def neighbours(self) -> dict[str, tuple[str, ...]]:
        """Each member's neighbours, sorted; the relation is symmetric."""
        n = len(self.members)
        degree = degree_for(n)
        if degree >= n - 1:
            return {m: tuple(p for p in self.members if p != m) for m in self.members}
        digest = hashlib.sha256(b"".join(sorted(a.signing_payload() for a in self.roster.adverts))).digest()
        # A public order fixed by the roster (no secret in it, and nobody chooses it).
        ring = sorted(self.members, key=lambda m: hashlib.sha256(digest + m.encode()).digest())
        out: dict[str, set[str]] = {m: set() for m in ring}
        for position, member in enumerate(ring):
            for step in range(1, degree // 2 + 1):
                peer = ring[(position + step) % n]
                out[member].add(peer)
                out[peer].add(member)
        return {m: tuple(sorted(peers)) for m, peers in out.items()}

    def threshold(self, member: str) -> int:
        return threshold_for(len(self.neighbours[member]))

    def holder_index(self, owner: str, holder: str) -> int:
        """1-based index of `holder`'s share of `owner`'s seeds."""
        return self.neighbours[owner].index(holder) + 1

    def majority(self) -> int:
        return len(self.members) // 2 + 1

    def check_survivors(self, survivor_set: SurvivorSet) -> None:
        if survivor_set.cohort != self.cohort_id:
            raise SecAggError("the survivor list is for another cohort")
        survivors = survivor_set.survivors
        if len(survivors) != len(set(survivors)):
            raise SecAggError("the survivor list names a hospital twice")
        strangers = set(survivors) - set(self.members)
        if strangers:
            raise SecAggError(f"the survivor list names hospitals outside the roster: {sorted(strangers)}")
        if len(survivors) < self.min_survivors:
            raise SecAggError(
                f"the survivor list names {len(survivors)} hospitals; a sum must hold at least "
                f"{self.min_survivors}"
            )

    # -- masks --------------------------------------------------------------------------------------
    def seed_mask(self, seed: bytes, length: int, bits: int) -> UIntArray:
        return primitives.expand(
            primitives.derive(seed, purpose=b"self-mask", context=self.context), length, bits
        )

    def pair_mask(self, shared_secret: bytes, a: str, b: str, length: int, bits: int) -> UIntArray:
        low, high = sorted((a, b))
        key = primitives.derive(
            shared_secret, purpose=b"pair-mask", context=self.context + f"\x00{low}\x00{high}".encode()
        )
        return primitives.expand(key, length, bits)

    def share_box_key(self, shared_secret: bytes, sender: str, recipient: str) -> bytes:
        return primitives.derive(
            shared_secret,
            purpose=b"share-box",
            context=self.context + f"\x00{sender}\x00{recipient}".encode(),
        )

    def box_associated(self, sender: str, recipient: str) -> bytes:
        return self.context + f"\x00{sender}\x00{recipient}".encode()


def seed_commitment(seed: bytes, context: bytes) -> bytes:
    return hashlib.sha256(b"fedlora/secagg/seed-commitment/v1\x00" + context + b"\x00" + seed).digest()


def ring_sum(vectors: Iterable[UIntArray], bits: int, length: int) -> UIntArray:
    """Sum of residue vectors in `Z_(2^bits)` (uint64 arithmetic wraps mod 2^64, which 2^bits divides)."""
    total = np.zeros(length, dtype=np.uint64)
    for v in vectors:
        total += v
    return reduce(total, bits)


def reduce(v: UIntArray, bits: int) -> UIntArray:
    return v if bits == 64 else v & np.uint64((1 << bits) - 1)


def residue_bytes(values: UIntArray, bits: int) -> bytes:
    """Residues of `Z_(2^bits)` on the wire: `ceil(bits / 8)` little-endian bytes each."""
    width = (bits + 7) // 8
    raw = np.ascontiguousarray(values, dtype="<u8").view(np.uint8).reshape(-1, 8)
    return raw[:, :width].tobytes()


def residues_from_bytes(data: bytes, *, bits: int, length: int) -> UIntArray:
    """Inverse of `residue_bytes`; raises `SecAggError` on a wrong size or a value outside the ring."""
    width = (bits + 7) // 8
    if len(data) != width * length:
        raise SecAggError(f"{length} residues of {bits} bits are {width * length} bytes, got {len(data)}")
    wide = np.zeros((length, 8), dtype=np.uint8)
    wide[:, :width] = np.frombuffer(data, dtype=np.uint8).reshape(length, width)
    values = wide.view("<u8").reshape(length).astype(np.uint64)
    if bits < 64 and np.any(values >> np.uint64(bits)):
        raise SecAggError(f"a residue lies outside [0, 2^{bits})")
    return values
