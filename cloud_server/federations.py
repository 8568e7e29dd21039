"""Federations: creation (layout, HE keys, sealed secret, adapter v0), lookup, and pause / resume / stop.

The spec, the public key and the sealed secret never change after creation; the mutable part is one
`FederationRecord`, written only in store transactions. The layout and the public scheme are derived from
the spec, so they are cached in memory and rebuilt after a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloud_server.central_ledger import Ledger
from cloud_server.errors import ConflictError, NotFoundError
from cloud_server.plans import PlanBoard, ended
from cloud_server.privacy import report as privacy_report
from cloud_server.records import FINAL_ROUND_STATES, FederationRecord
from protocol.aggregation import RoundNoise, central_std, draw_central
from protocol.compression import CompressionError, plan_compression
from protocol.crypto import (
    HEScheme,
    KekRing,
    KeyBindingError,
    KeyStoreError,
    WrongKekError,
    generate_scheme,
    key_fingerprint,
    open_bytes,
    open_secret,
    scheme_from_public,
    seal_bytes,
    seal_secret,
)
from protocol.crypto.params import HEParams
from protocol.ffa import AdapterLayout, basis_bytes, seeded_bases
from protocol.messages import (
    AdapterVersion,
    ErrorCode,
    FederationCreated,
    FederationInfo,
    FederationSpec,
    FederationState,
    PrivacyReport,
    RoundPlan,
    RoundState,
    RoundStatus,
)
from protocol.privacy_planning import BudgetError, check_budget
from protocol.samplers import OpenDPSampler
from protocol.strategies import strategy_for
from services import keyspace
from services.clock import TimeSource
from services.errors import FederationEndedError, InvalidRequestError
from services.identity import SigningKey
from services.model_layout import LayoutError, federation_layout
from services.store import StateStore, Updates
from services.stored_records import StoredRecordError, discard, parse_record, read_record

log = logging.getLogger("fedlora.cloud")

Layout = tuple[AdapterLayout, dict[str, int]]


def vector_bytes(vector: np.ndarray) -> bytes:
    """The stored and served form of an adapter vector: float32 little-endian."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def vector_sha256(data: bytes) -> str:
    """The digest a round plan carries of the vector it starts from (`RoundPlan.vector_sha256`)."""
    return hashlib.sha256(data).hexdigest()


def vector_from_bytes(data: bytes, length: int, *, key: str) -> np.ndarray:
    """The adapter vector stored at `key`; `StoredRecordError` unless it is `length` finite float32 values."""
    if len(data) != 4 * length:
        raise StoredRecordError(key, f"{len(data)} bytes, the layout needs {4 * length}", raw=data)
    vector = np.frombuffer(data, dtype="<f4")
    if not np.isfinite(vector).all():
        raise StoredRecordError(key, "non-finite values", raw=data)
    return vector.astype(np.float32)


def _plan_key_label(fid: str) -> bytes:
    return keyspace.fed_plan_key(fid).encode()


class FederationService:
    def __init__(
        self, store: StateStore, *, keks: KekRing, clock: TimeSource, model_path: str | Path, board: PlanBoard
    ) -> None:
        self._store = store
        # New records are sealed under `keks.current`; the previous KEK, during a rotation, only opens.
        self._keks = keks
        self._sampler = OpenDPSampler()  # the services' only noise source: no seed, no injected generator
        self._clock = clock
        self._model_path = model_path
        self._board = board
        self._specs: dict[str, FederationSpec] = {}
        self._layouts: dict[str, Layout] = {}
        self._public: dict[str, HEScheme[Any]] = {}
        self._basis_digests: dict[tuple[str, int], str] = {}

    # -- creation -------------------------------------------------------------------------------------
    async def create(self, spec: FederationSpec) -> FederationCreated:
        fid = spec.federation_id
        strategy_for(spec)  # refuses a strategy this cloud cannot run
        if await self._store.get(keyspace.fed_spec(fid)) is not None:
            raise ConflictError(f"federation {fid!r} already exists", field="federation_id")
        layout = await self._compute_layout(spec)
        try:
            # With `compression` the cloud plans the bits for this adapter's size; the spec it stores, and
            # hospitals follow, carries them.
            spec = plan_compression(spec, layout_size=layout[0].size)
        except CompressionError as e:
            raise InvalidRequestError(str(e), field=e.field, detail=e.detail) from e
        try:
            check_budget(spec, layout_size=layout[0].size)
        except BudgetError as e:
            raise InvalidRequestError(str(e), field=e.field, detail=e.detail) from e
        scheme = await asyncio.to_thread(generate_scheme, spec.he)
        sealed = seal_secret(scheme, self._keks.current, federation_id=fid)
        # Plans are signed so that a hospital can tell the cloud's plan from anyone else's and its edge can
        # compare what hospitals were served; the key is kept like the HE secret, sealed under the KEK.
        plan_key = SigningKey.generate()
        sealed_plan_key = seal_bytes(plan_key.private_bytes(), self._keks.current, label=_plan_key_label(fid))
        now = await self._clock()
        record = FederationRecord(
            created_at=now,
            he_fingerprint=scheme.fingerprint.hex(),
            layout_size=layout[0].size,
            layout_digest=layout[0].digest,
            plan_public_key=plan_key.public_bytes,
        )
        v0 = AdapterVersion(federation_id=fid, version=0, created_at=now, basis_version=spec.basis_version)
        writes = {
            keyspace.fed_spec(fid): spec.model_dump_json().encode(),
            keyspace.fed_public(fid): scheme.public_bytes(),
            keyspace.fed_secret(fid): sealed,
            keyspace.fed_plan_key(fid): sealed_plan_key,
            keyspace.fed_state(fid): record.dump(),
            keyspace.fed_adapter(fid, 0): vector_bytes(
                layout[0].initial_vector(seed=spec.seed, basis_version=spec.basis_version)
            ),
            keyspace.fed_adapter_meta(fid, 0): v0.model_dump_json().encode(),
        }

        def claim(current: dict[str, bytes | None]) -> Updates:
            if current[keyspace.fed_spec(fid)] is not None:
                raise ConflictError(f"federation {fid!r} already exists", field="federation_id")
            return writes

        # Listed in the same transaction as its keys: a create the store cuts leaves everything or nothing,
        # never sealed keys that `fedlora kek rotate` and retention would not find by the listing.
        listed = await self._store.hset_if_absent_with(
            keyspace.federations(), fid, now.isoformat().encode(), keys=list(writes), fn=claim
        )
        if not listed:
            raise ConflictError(f"federation {fid!r} already exists", field="federation_id")
        self._specs[fid], self._layouts[fid], self._public[fid] = spec, layout, scheme
        log.info(
            "federation created", extra={"federation_id": fid, "data": {"layout_size": record.layout_size}}
        )
        return FederationCreated(federation_id=fid, he_fingerprint=record.he_fingerprint)

    async def _compute_layout(self, spec: FederationSpec) -> Layout:
        try:
            return await asyncio.to_thread(federation_layout, spec, self._model_path)
        except LayoutError as e:
            raise InvalidRequestError(str(e), field=e.field) from e

    # -- lookup ---------------------------------------------------------------------------------------
    async def spec(self, fid: str) -> FederationSpec:
        cached = self._specs.get(fid)
        if cached is not None:
            return cached
        spec = await read_record(self._store, keyspace.fed_spec(fid), FederationSpec)
        if spec is None:
            raise NotFoundError(f"no federation {fid!r}", code=ErrorCode.UNKNOWN_FEDERATION, field="fid")
        self._specs[fid] = spec
        return spec

    async def record(self, fid: str) -> FederationRecord:
        record = await read_record(self._store, keyspace.fed_state(fid), FederationRecord)
        if record is None:
            raise NotFoundError(f"no federation {fid!r}", code=ErrorCode.UNKNOWN_FEDERATION, field="fid")
        return record

    async def info(self, fid: str) -> FederationInfo:
        record = await self.record(fid)
        return record.info(await self.spec(fid))

    async def privacy(self, fid: str) -> PrivacyReport:
        """The privacy ledger of `fid` with every epsilon computed (the local ones in a thread: the
        subsampled-Gaussian RDP takes a few milliseconds per history)."""
        spec, record = await self.spec(fid), await self.record(fid)
        ledger = await read_record(self._store, keyspace.fed_privacy(fid), Ledger) or Ledger()
        # The projections are for the round now open, with the noise shares its plan asks for; once the
        # federation has ended, for the round that would have followed its last.
        current = record.current_round
        plan = (
            await read_record(self._store, keyspace.fed_round_plan(fid, current), RoundPlan)
            if current is not None and not record.ended
            else None
        )
        next_round = current + 1 if current is not None and record.ended else current
        return await asyncio.to_thread(
            privacy_report,
            spec,
            ledger,
            layout_size=record.layout_size,
            state=record.state,
            reason=record.reason,
            rounds_closed=record.rounds_closed,
            next_round=next_round,
            shares_planned=plan.noise_share.clients if plan is not None and plan.noise_share else None,
        )

    async def ids(self) -> list[str]:
        return sorted(await self._store.hgetall(keyspace.federations()))

    async def list(self) -> list[FederationInfo]:
        infos = []
        for fid in await self.ids():
            try:
                infos.append(await self.info(fid))
            except NotFoundError:
                continue  # indexed, but its creation never committed
        return infos

    @property
    def model_path(self) -> Path:
        """The base model folder this cloud computes layouts (and exports classifiers) from."""
        return Path(self._model_path)

    async def layout(self, fid: str) -> Layout:
        cached = self._layouts.get(fid)
        if cached is None:
            cached = self._layouts[fid] = await self._compute_layout(await self.spec(fid))
        return cached

    async def public_bytes(self, fid: str) -> bytes:
        raw = await self._store.get(keyspace.fed_public(fid))
        if raw is None:
            raise NotFoundError(f"no federation {fid!r}", code=ErrorCode.UNKNOWN_FEDERATION, field="fid")
        return raw

    async def public_scheme(self, fid: str) -> HEScheme[Any]:
        cached = self._public.get(fid)
        if cached is None:
            spec, public = await self.spec(fid), await self.public_bytes(fid)
            cached = self._public[fid] = await asyncio.to_thread(scheme_from_public, spec.he, public)
        return cached

    async def secret_scheme(self, fid: str) -> HEScheme[Any]:
        """The federation's secret scheme, opened with the KEK for one use and never cached, and only beside
        the public key the cloud serves (the one hospitals encrypt under) and the fingerprint of its record:
        `KeyBindingError` when the sealed key belongs to another federation or either was swapped."""
        spec, record = await self.spec(fid), await self.record(fid)
        sealed = await self._store.get(keyspace.fed_secret(fid))
        if sealed is None:
            raise NotFoundError(f"no federation {fid!r}", code=ErrorCode.UNKNOWN_FEDERATION, field="fid")
        served = key_fingerprint(spec.he, await self.public_bytes(fid))
        if served.hex() != record.he_fingerprint:
            raise KeyBindingError(
                f"the public key in the store has fingerprint {served.hex()[:12]}..., the federation's record "
                f"{record.he_fingerprint[:12]}...: the public key was swapped in the store"
            )
        return await asyncio.to_thread(
            lambda: open_secret(spec.he, sealed, self._keks, federation_id=fid, fingerprint=served)
        )

    async def plan_signer(self, fid: str) -> SigningKey | None:
        """The federation's plan-signing key, opened with the KEK for one use and never cached; None for a
        federation created before plans were signed (its plans stay unsigned, and hospitals refuse them)."""
        sealed = await self._store.get(keyspace.fed_plan_key(fid))
        if sealed is None:
            return None
        return SigningKey.from_bytes(open_bytes(sealed, self._keks, label=_plan_key_label(fid)))

    async def basis_bytes(self, fid: str, version: int) -> bytes:
        """Every module's `A_max` of basis `version` (`protocol.ffa.basis_bytes`): a re-based basis as stored,
        or the federation's seeded one, rebuilt from the seed."""
        stored = await self._store.get(keyspace.fed_basis(fid, version))
        if stored is not None:
            return stored
        spec = await self.spec(fid)
        if version != spec.basis_version:
            raise NotFoundError(f"federation {fid!r} has no basis version {version}", field="version")
        layout, in_features = await self.layout(fid)
        return await asyncio.to_thread(
            lambda: basis_bytes(
                layout, seeded_bases(layout, in_features, seed=spec.seed, basis_version=spec.basis_version)
            )
        )

    async def basis_sha256(self, fid: str, version: int) -> str:
        """`RoundPlan.basis_sha256` of basis `version`: the digest of the bytes `basis_bytes` serves (a basis
        version never changes once written, so it is computed once per process)."""
        cached = self._basis_digests.get((fid, version))
        if cached is None:
            cached = hashlib.sha256(await self.basis_bytes(fid, version)).hexdigest()
            self._basis_digests[(fid, version)] = cached
        return cached

    async def adapter_sha256(self, fid: str, version: int) -> str:
        """`RoundPlan.vector_sha256` of adapter `version`: the digest of the bytes the cloud serves."""
        raw = await self._store.get(keyspace.fed_adapter(fid, version))
        if raw is None:
            raise NotFoundError(f"adapter version {version} of {fid!r} is missing from the store")
        return vector_sha256(raw)

    async def central_noise(
        self, fid: str, round_: int, noise: RoundNoise, params: HEParams, *, size: int
    ) -> npt.NDArray[np.int64] | None:
        """The cloud's noise on `round_`'s sum, in lattice steps (`protocol.aggregation.draw_central`; None
        when the round asks the cloud for none): drawn once by the exact CSPRNG sampler and kept sealed under
        the KEK (whoever reads the store must not be able to subtract it from a published adapter), so every
        closer of the round that asks for the same noise adds the same. A closer asking for other noise (the
        round left an edge's sum out, so its shares changed) draws afresh and replaces it, and so does one
        whose stored draw does not open (`_opened_noise`). Either way nothing was released with the draw it
        replaces: the commit that releases a round deletes its noise in the same transaction.
        `KeyStoreError` if this replica's KEK is not the federation's, or not the one the stored draw names."""
        if noise.cloud_std <= 0:
            return None
        key = keyspace.fed_round_noise(fid, round_)
        std = central_std(noise, params, size=size)
        # What the noise is for, sealed with it: a stored draw for other noise is never reused.
        tag = f"{noise.mechanism.value}:{noise.distributed}:{params.noise_step!r}:{std!r}:{size}\n".encode()
        for _ in range(2):
            sealed = await self._store.get(key)
            stored = None if sealed is None else await self._opened_noise(fid, key, sealed)
            if stored is not None and stored.startswith(tag):
                return np.frombuffer(stored[len(tag) :], dtype="<i8").astype(np.int64)
            drawn = await asyncio.to_thread(draw_central, noise, params, size=size, sampler=self._sampler)
            assert drawn is not None  # cloud_std > 0
            fresh = seal_bytes(tag + drawn.astype("<i8").tobytes(), self._keks.current, label=key.encode())
            if stored is not None:
                await self._store.set(key, fresh)
                return drawn
            if await self._store.set_if_absent(key, fresh):
                return drawn
        raise NotFoundError(f"the central noise of round {round_} of {fid!r} vanished from the store")

    async def _opened_noise(self, fid: str, key: str, sealed: bytes) -> bytes | None:
        """The round's stored draw (`key`) opened with the KEK; None when it does not open although the KEK
        opens the federation's sealed secret (a truncated or foreign write, not a wrong KEK): then it is
        quarantined and removed (`services.stored_records.discard`), for the caller to draw afresh. A KEK that
        opens neither raises `KeyStoreError`, which the closer backs off from without failing the round; so
        does a draw sealed under a KEK this replica does not hold (`WrongKekError`: during a KEK roll, one a
        replica on the new KEK drew), which is left as it is for that replica to close the round with: noise
        is never drawn twice for a round because of a KEK mismatch."""
        try:
            return open_bytes(sealed, self._keks, label=key.encode())
        except WrongKekError:
            raise
        except KeyStoreError as e:
            await self.secret_scheme(fid)  # raises KeyStoreError itself when the KEK is not the federation's
            await discard(
                self._store, StoredRecordError(key, f"the sealed noise does not open: {e}", raw=sealed)
            )
            return None

    async def require_running(self, fid: str) -> FederationRecord:
        """The record, unless the federation has ended (410)."""
        record = await self.record(fid)
        if record.ended:
            raise FederationEndedError(
                f"federation {fid!r} is {record.state.value}"
                + (f": {record.reason}" if record.reason else ""),
                detail={"state": record.state.value},
            )
        return record

    # -- lifecycle ------------------------------------------------------------------------------------
    async def pause(self, fid: str) -> FederationInfo:
        return await self._transition(
            fid, {FederationState.ACTIVE}, FederationState.PAUSED, "paused by admin"
        )

    async def resume(self, fid: str) -> FederationInfo:
        return await self._transition(fid, {FederationState.PAUSED}, FederationState.ACTIVE, None)

    async def stop(self, fid: str) -> FederationInfo:
        return await self._transition(
            fid, {FederationState.ACTIVE, FederationState.PAUSED}, FederationState.STOPPED, "stopped by admin"
        )

    async def _transition(
        self, fid: str, allowed: set[FederationState], target: FederationState, reason: str | None
    ) -> FederationInfo:
        spec = await self.spec(fid)
        current_round = (await self.record(fid)).current_round
        record_key = keyspace.fed_state(fid)
        status_key = keyspace.fed_round_status(fid, current_round) if current_round is not None else None
        seal_key = keyspace.fed_round_sealed(fid, current_round) if current_round is not None else None
        now = await self._clock()

        def change(current: dict[str, bytes | None]) -> Updates:
            raw = current[record_key]
            if raw is None:
                raise NotFoundError(f"no federation {fid!r}", code=ErrorCode.UNKNOWN_FEDERATION, field="fid")
            record = parse_record(raw, key=record_key, reader=FederationRecord)
            if record.state not in allowed:
                raise ConflictError(
                    f"federation {fid!r} is {record.state.value}; cannot make it {target.value}",
                    detail={"state": record.state.value},
                )
            updates: dict[str, bytes | None] = {
                record_key: record.model_copy(update={"state": target, "reason": reason}).dump()
            }
            # A stopped federation's open round will never close: say so in its status, if it is sealed (only
            # a foreign write into it keeps `RoundCloser.stop` from failing it with its sums). An unsealed
            # round is never failed here: an edge sum stored into it would be acknowledged and never counted.
            raw_status = current[status_key] if status_key is not None else None
            if (
                target is FederationState.STOPPED
                and status_key
                and raw_status
                and seal_key
                and current[seal_key] is not None
                and record.current_round == current_round
            ):
                status = parse_record(raw_status, key=status_key, reader=RoundStatus)
                if status.state not in FINAL_ROUND_STATES:
                    failed = ended(status, RoundState.FAILED, now).model_copy(
                        update={"failure": "federation stopped"}
                    )
                    updates[status_key] = failed.model_dump_json().encode()
            return updates

        keys = [record_key] + ([status_key] if status_key else []) + ([seal_key] if seal_key else [])
        await self._store.transaction(keys, change)
        self._board.publish(fid)
        log.info("federation %s", target.value, extra={"federation_id": fid})
        return (await self.record(fid)).info(spec)
