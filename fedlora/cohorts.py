"""One edge's masking cohort in one process: the simulation's hospitals and edge, with the protocol's own
`MaskingClient`s, routing and correction (`protocol.secagg`) and real Ed25519 identities, without HTTP.

The hospitals join before they train (as the agent does): `seal_for(name, ...)` then gives what masks and
encrypts that hospital's contribution; `correction(survivors)` is what the edge forwards beside the
survivors' sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocol.crypto import HEScheme
from protocol.secagg import (
    Cohort,
    CohortId,
    Inbox,
    MaskingClient,
    Roster,
    SurvivorSet,
    UnmaskRequest,
    correction,
    residue_bytes,
    route,
)
from protocol.secagg.cohort import reduce
from services.identity import SigningKey, verifier


@dataclass(frozen=True)
class MaskedSeal:
    """One member's masked encryption (the `encrypt` of `client_agent.update.seal`). It holds the member's
    masks for one round and no key, so it pickles to a simulation worker in another process: masking adds
    them in `Z_(2^bits)`, which is what `MaskingClient.mask` adds to its values."""

    mask: np.ndarray
    bits: int

    def __call__(self, scheme: HEScheme[Any], values: np.ndarray) -> bytes:
        if scheme.ring_bits != self.bits:
            raise ValueError(
                f"the masks are in a ring of {self.bits} bits, the scheme's has {scheme.ring_bits}"
            )
        masked = reduce(scheme.residues(values) + self.mask, self.bits)
        return scheme.serialize(scheme.encrypt_residues(masked))


class InProcessCohort:
    """The cohort of `members` at one edge for one round, joined (adverts, roster, shares, inboxes)."""

    def __init__(self, cohort_id: CohortId, members: Sequence[str], *, min_survivors: int) -> None:
        keys = {m: SigningKey.generate() for m in members}
        check = verifier({m: key.public_bytes for m, key in keys.items()}.get)
        self._clients = {
            m: MaskingClient(cohort_id, m, sign=key.sign, verify=check, min_survivors=min_survivors)
            for m, key in keys.items()
        }
        self.cohort_id = cohort_id
        adverts = sorted((c.advertise() for c in self._clients.values()), key=lambda a: a.client_id)
        self._cohort = Cohort(Roster(cohort=cohort_id, adverts=adverts), min_survivors)
        self._inboxes: dict[str, Inbox] = route(
            self._cohort, [c.share(self._cohort.roster) for c in self._clients.values()]
        )

    def seal_for(self, member: str, *, bits: int, length: int) -> MaskedSeal:
        """How `member` encrypts a contribution of `length` values in a ring of `bits` bits: its masks, drawn
        now (the member's `MaskingClient.mask` of zeros), added to the values in the scheme's ring."""
        zeros = np.zeros(length, dtype=np.uint64)
        return MaskedSeal(self._clients[member].mask(self._inboxes[member], zeros, bits=bits), bits)

    def correction(self, survivors: Sequence[str], *, bits: int, length: int) -> bytes:
        """The survivors sign their list, answer the unmask request, and the edge computes the correction."""
        survivor_set = SurvivorSet(cohort=self.cohort_id, survivors=sorted(survivors))
        consents = {m: self._clients[m].consent(survivor_set).signature for m in survivor_set.survivors}
        request = UnmaskRequest(survivor_set=survivor_set, consents=consents)
        answers = [self._clients[m].unmask(request) for m in survivor_set.survivors]
        fix = correction(
            self._cohort,
            senders=self._inboxes,
            survivors=survivor_set.survivors,
            answers=answers,
            length=length,
            bits=bits,
        )
        return residue_bytes(fix, bits)
