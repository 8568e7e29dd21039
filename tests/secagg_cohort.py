"""Runs one masking cohort in-process, stage by stage, with hospitals dropping where a test says.

The edge's part is what `protocol.secagg.unmask` gives it (routing, the correction); the hospitals are
real `MaskingClient`s with Ed25519 identities. Stages, in order: `advertise`, `share`, `upload`, `consent`,
`unmask`; a hospital listed under a stage does nothing from that stage on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from protocol.secagg import (
    Cohort,
    CohortId,
    MaskingClient,
    Roster,
    SecAggError,
    SurvivorSet,
    UnmaskRequest,
    correction,
    route,
)
from services.identity import SigningKey, verifier

STAGES = ("advertise", "share", "upload", "consent", "unmask")


@dataclass
class Hospitals:
    """Enrolled identities: what the cloud's registry would answer."""

    ids: list[str]
    keys: dict[str, SigningKey] = field(init=False)

    def __post_init__(self) -> None:
        self.keys = {c: SigningKey.generate() for c in self.ids}

    def verify(self, client_id: str, payload: bytes, signature: bytes) -> bool:
        return verifier(self.public_key)(client_id, payload, signature)

    def public_key(self, client_id: str) -> bytes | None:
        key = self.keys.get(client_id)
        return key.public_bytes if key is not None else None

    def clients(self, cohort: CohortId, *, k: int) -> dict[str, MaskingClient]:
        return {
            c: MaskingClient(cohort, c, sign=self.keys[c].sign, verify=self.verify, min_survivors=k)
            for c in self.ids
        }


@dataclass
class CohortRun:
    """What one run of a cohort produced."""

    cohort: Cohort
    clients: dict[str, MaskingClient]
    masked: dict[str, np.ndarray]  # what each survivor uploaded (masked residues)
    survivors: list[str]
    correction: np.ndarray


def cohort_id(edge: str = "edge-1", round_: int = 0) -> CohortId:
    return CohortId(federation_id="fed-secagg", round=round_, edge_id=edge)


def run_cohort(
    hospitals: Hospitals,
    residues: Mapping[str, np.ndarray],
    *,
    bits: int,
    k: int,
    drop: Mapping[str, set[str]] | None = None,
    cohort: CohortId | None = None,
) -> CohortRun:
    """Every stage in order; raises `SecAggError` where the protocol refuses to go on."""
    drop = drop or {}
    cid = cohort or cohort_id()
    clients = hospitals.clients(cid, k=k)
    gone: set[str] = set()

    def alive(stage: str) -> list[str]:
        gone.update(drop.get(stage, set()))
        return [c for c in hospitals.ids if c not in gone]

    adverts = [clients[c].advertise() for c in alive("advertise")]
    roster = Roster(cohort=cid, adverts=sorted(adverts, key=lambda a: a.client_id))
    public = Cohort(roster, k)
    bundles = [clients[c].share(roster) for c in alive("share")]
    inboxes = route(public, bundles)
    senders = sorted(inboxes)
    length = next(iter(residues.values())).size
    masked = {c: clients[c].mask(inboxes[c], residues[c], bits=bits) for c in alive("upload") if c in inboxes}
    survivor_set = SurvivorSet(cohort=cid, survivors=sorted(masked))
    consents = {c: clients[c].consent(survivor_set).signature for c in alive("consent") if c in masked}
    request = UnmaskRequest(survivor_set=survivor_set, consents=consents)
    answers = [clients[c].unmask(request) for c in alive("unmask") if c in consents]
    fix = correction(
        public, senders=senders, survivors=survivor_set.survivors, answers=answers, length=length, bits=bits
    )
    return CohortRun(public, clients, masked, survivor_set.survivors, fix)


def ring_total(vectors: list[np.ndarray], bits: int) -> np.ndarray:
    """Sum in Z_(2^bits), computed with Python integers (independently of the code under test)."""
    modulus = 1 << bits
    length = vectors[0].size
    return np.array([sum(int(v[i]) for v in vectors) % modulus for i in range(length)], dtype=np.uint64)


__all__ = ["STAGES", "CohortRun", "Hospitals", "SecAggError", "cohort_id", "ring_total", "run_cohort"]
