"""One edge's masking cohort in one process: the simulation's hospitals and edge, with the protocol's own
`MaskingClient`s, routing and correction (`protocol.secagg`) and real Ed25519 identities, without HTTP.

The hospitals join before they train (as the agent does): `seal_for(name)` then masks and encrypts that
hospital's contribution; `correction(survivors)` is what the edge forwards beside the survivors' sum.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from services.identity import SigningKey, verifier


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

    def seal_for(self, member: str) -> Callable[[HEScheme[Any], np.ndarray], bytes]:
        """How `member` encrypts: its values in the scheme's ring, masked, encrypted, serialised."""

        def seal(scheme: HEScheme[Any], values: np.ndarray) -> bytes:
            bits = scheme.ring_bits
            assert bits is not None, "masking needs a scheme with an exact ring"
            masked = self._clients[member].mask(self._inboxes[member], scheme.residues(values), bits=bits)
            return scheme.serialize(scheme.encrypt_residues(masked))

        return seal

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
