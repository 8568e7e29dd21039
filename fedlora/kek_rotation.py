"""Re-sealing the cloud's store under a new key-encryption key (`fedlora kek rotate` and `fedlora kek check`).

Every record the cloud seals under the KEK: each federation's HE secret key (`keyspace.fed_secret`), its
plan-signing key (`keyspace.fed_plan_key`) and each open round's central noise (`keyspace.fed_round_noise`;
a round deletes its own when it commits). The HE secret is bound to its federation in its header, the
others to their own store key through the associated data (`protocol.crypto.keystore`); re-sealing keeps
both bindings, so a record moved to another federation fails the same checks after a rotation as before.

Each record is re-sealed in its own store transaction (Redis WATCH/MULTI): a running cloud that seals it
in between (a closer drawing a round's noise) makes the transaction read the new value again, which is then
already sealed under the current KEK and left alone. So a rotation can run beside the cloud, be killed at
any point and be run again: it re-seals what is left and counts the rest as current.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from pydantic import BaseModel

from protocol.crypto import KekRing, KeyStoreError, kek_id, reseal_bytes, reseal_secret, sealed_kek_id
from services import keyspace
from services.store import KeepingExpiry, StateStore, Updates


class SealedKind(enum.StrEnum):
    HE_SECRET = "he-secret"  # noqa: S105 - a kind of record, not a secret
    PLAN_KEY = "plan-key"
    ROUND_NOISE = "round-noise"


class RecordState(enum.StrEnum):
    RESEALED = "resealed"  # sealed again under the current KEK by this run
    STALE = "stale"  # needs re-sealing: under the previous KEK, or an envelope that does not name its KEK
    CURRENT = "current"  # already sealed under the current KEK, in the newest envelope
    UNREADABLE = "unreadable"  # opens under neither KEK, or is bound to another federation: left as it is
    GONE = "gone"  # deleted between listing and re-sealing (a round that committed)


class SealedRecord(BaseModel, frozen=True, allow_inf_nan=False):
    key: str
    federation_id: str
    kind: SealedKind


class RecordOutcome(BaseModel, frozen=True, allow_inf_nan=False):
    """What a run found or did with one record: never its value; `reason` says under which KEK a record to
    re-seal was sealed, or why one does not open."""

    key: str
    federation_id: str
    kind: SealedKind
    state: RecordState
    reason: str | None = None


class RotationReport(BaseModel, frozen=True, allow_inf_nan=False):
    current_kek_id: str
    previous_kek_id: str | None
    dry_run: bool
    records: list[RecordOutcome]

    def count(self, state: RecordState) -> int:
        return sum(1 for record in self.records if record.state is state)

    @property
    def complete(self) -> bool:
        """Whether every record opens with the current KEK alone, in the newest envelope (or is gone)."""
        return all(r.state in (RecordState.CURRENT, RecordState.GONE) for r in self.records)


async def sealed_records(store: StateStore) -> list[SealedRecord]:
    """Every record sealed under the KEK in the cloud's store, federation by federation: found by its key's
    shape over the whole of the cloud's keyspace (SCAN), so a federation that is not listed in
    `keyspace.federations()` (a create cut before it was listed) is re-sealed and checked too; a listed
    federation's HE secret and plan key are named even when missing (reported gone)."""
    found: dict[str, SealedRecord] = {}
    for fid in await store.hgetall(keyspace.federations()):
        for key, kind in (
            (keyspace.fed_secret(fid), SealedKind.HE_SECRET),
            (keyspace.fed_plan_key(fid), SealedKind.PLAN_KEY),
        ):
            found[key] = SealedRecord(key=key, federation_id=fid, kind=kind)
    for key in await store.scan(keyspace.CLOUD_PREFIX):
        record = _sealed_record(key)
        if record is not None:
            found[key] = record
    return sorted(found.values(), key=lambda r: (r.federation_id, r.kind is SealedKind.ROUND_NOISE, r.key))


def _sealed_record(key: str) -> SealedRecord | None:
    """The sealed record stored at `key`, told by the key's shape (`services.keyspace`), or None."""
    fid = key[len(keyspace.CLOUD_PREFIX) :].partition(":")[0]  # a federation id holds no colon
    if not fid:
        return None
    if key == keyspace.fed_secret(fid):
        return SealedRecord(key=key, federation_id=fid, kind=SealedKind.HE_SECRET)
    if key == keyspace.fed_plan_key(fid):
        return SealedRecord(key=key, federation_id=fid, kind=SealedKind.PLAN_KEY)
    rounds = keyspace.fed_rounds_prefix(fid)
    number = key[len(rounds) :].removesuffix(":noise") if key.startswith(rounds) else ""
    if number.isdigit() and key == keyspace.fed_round_noise(fid, int(number)):
        return SealedRecord(key=key, federation_id=fid, kind=SealedKind.ROUND_NOISE)
    return None


def resealed(record: SealedRecord, sealed: bytes, keks: KekRing) -> bytes | None:
    """`sealed` (the value at `record.key`) sealed again under `keks.current`; None when it already is.
    `KeyStoreError` (`KeyBindingError`, `WrongKekError`) when it cannot be opened where it is stored."""
    if record.kind is SealedKind.HE_SECRET:
        return reseal_secret(sealed, keks, federation_id=record.federation_id)
    return reseal_bytes(sealed, keks, label=record.key.encode())


async def reseal_record(
    store: StateStore, record: SealedRecord, keks: KekRing, *, write: bool
) -> RecordOutcome:
    """Re-seal one record under `keks.current` in one transaction (only if `write`); what was found."""
    found: list[RecordOutcome] = []

    def reseal(current: dict[str, bytes | None]) -> Updates:
        found.clear()
        sealed = current[record.key]
        state, reason, fresh = RecordState.GONE, None, None
        if sealed is not None:
            try:
                fresh = resealed(record, sealed, keks)
            except KeyStoreError as e:
                state, reason = RecordState.UNREADABLE, str(e)
            else:
                if fresh is None:
                    state = RecordState.CURRENT
                else:
                    state = RecordState.RESEALED if write else RecordState.STALE
                    reason = _sealed_under(sealed)
        found.append(RecordOutcome(**record.model_dump(), state=state, reason=reason))
        return {record.key: KeepingExpiry(fresh)} if write and fresh is not None else {}

    await store.transaction([record.key], reseal)
    return found[0]


def _sealed_under(sealed: bytes) -> str:
    named = sealed_kek_id(sealed)
    return "sealed before records named their KEK" if named is None else f"sealed under KEK {named.hex()}"


async def rotate(
    store: StateStore,
    keks: KekRing,
    *,
    write: bool,
    on_record: Callable[[RecordOutcome], None] | None = None,
    records: list[SealedRecord] | None = None,
) -> RotationReport:
    """Re-seal every sealed record under `keks.current` (`write`), or only say which need it. `on_record`
    hears each outcome as it is decided (a progress bar); `records` defaults to `sealed_records(store)`."""
    todo = records if records is not None else await sealed_records(store)
    outcomes = []
    for record in todo:
        outcome = await reseal_record(store, record, keks, write=write)
        outcomes.append(outcome)
        if on_record is not None:
            on_record(outcome)
    return RotationReport(
        current_kek_id=keks.current_id.hex(),
        previous_kek_id=None if keks.previous is None else kek_id(keks.previous).hex(),
        dry_run=not write,
        records=outcomes,
    )
