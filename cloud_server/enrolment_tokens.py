"""Enrolment credentials: single-use enrolment tokens bound to one edge or hospital id, and the challenges an
enrolling party signs with its key.

An admin issues a token for (role, id); the cloud keeps its SHA-256 with an expiry, never the token. The
token is consumed in the same store transaction that writes the enrolment (`admit`), so it enrols its one
party once. Every enrolment, a first one or a re-enrolment after a lost API token, also proves possession of
the key it enrols by signing a nonce the cloud issued (`challenge`, `check_proof`); the nonce is marked used in
that transaction too (`consume_challenge`), so a proof is never replayed.

Issuing a challenge writes nothing: the nonce carries its expiry and an HMAC under the federation's
challenge key (`cloud:{fid}:enrolment-challenge-key`, drawn once), so that the unauthenticated challenge route
cannot fill the store; only an enrolment whose signature verifies writes its nonce's used mark, which expires
with the nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta

from cloud_server.errors import ConflictError, NotFoundError, UnauthenticatedError
from cloud_server.federations import FederationService
from protocol.messages import (
    ENROLMENT_CHALLENGE_TTL_S,
    ClientEnrolment,
    EdgeEnrolment,
    EnrolmentChallenge,
    EnrolmentTokenInfo,
    EnrolmentTokenIssued,
    EnrolmentTokenRequest,
    EnrolmentTokenState,
    ErrorCode,
    Role,
)
from services import keyspace
from services.clock import TimeSource
from services.identity import IdentityError, new_token, token_digest, verify
from services.store import Expiring, FieldUpdates, HashField, StateStore, Updates
from services.stored_records import StoredRecordError, parse_record, read_hash_records

log = logging.getLogger("fedlora.cloud")
Writes = tuple[FieldUpdates, Updates]


_NONCE_TAG = b"fedlora/enrolment-challenge/v1\0"
_NONCE_RANDOM_BYTES = 12
_NONCE_MAC_BYTES = 16


async def _challenge_key(store: StateStore, fid: str) -> bytes:
    """The federation's challenge key, drawn from the OS the first time any replica needs it."""
    key = keyspace.fed_enrolment_challenge_key(fid)
    raw = await store.get(key)
    if raw is None:
        await store.set_if_absent(key, secrets.token_bytes(32))
        raw = await store.get(key)
    if raw is None or len(raw) != 32:
        raise ConflictError(
            f"the enrolment challenge key of {fid!r} is missing or not 32 bytes",
            code=ErrorCode.STORED_RECORD_CORRUPT,
            detail={"key": key},
        )
    return raw


def _nonce_mac(key: bytes, fid: str, body: bytes) -> bytes:
    return hmac.new(key, _NONCE_TAG + fid.encode() + b"\0" + body, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]


def mint_nonce(key: bytes, fid: str, expires_at: datetime) -> str:
    """96 random bits, the expiry (whole seconds) and their MAC under the federation's challenge `key`."""
    body = secrets.token_bytes(_NONCE_RANDOM_BYTES) + int(expires_at.timestamp()).to_bytes(4, "big")
    return (body + _nonce_mac(key, fid, body)).hex()


def nonce_lifetime_s(key: bytes, fid: str, nonce: str, now: datetime) -> float:
    """Seconds `nonce` may still be answered: 409 `unknown_challenge` unless the cloud minted it for `fid`
    (its MAC) and it has not expired."""
    raw = bytes.fromhex(nonce) if len(nonce) % 2 == 0 else b""  # the wire model admits only hex digits
    body, mac = raw[:-_NONCE_MAC_BYTES], raw[-_NONCE_MAC_BYTES:]
    left = (
        int.from_bytes(body[_NONCE_RANDOM_BYTES:], "big") - now.timestamp()
        if len(body) == _NONCE_RANDOM_BYTES + 4
        else -1.0
    )
    if not hmac.compare_digest(mac, _nonce_mac(key, fid, body)) or left <= 0:
        raise ConflictError(
            "the enrolment's nonce was not issued by this federation or has expired: ask for a new challenge",
            code=ErrorCode.UNKNOWN_CHALLENGE,
            field="nonce",
        )
    return left


async def check_proof(
    store: StateStore, fid: str, request: EdgeEnrolment | ClientEnrolment, now: datetime
) -> float:
    """Raise 401 `bad_signature` unless `request` carries its key's signature of its signing payload for
    `fid` (which names the role, the id, the key, the edge and URL, and the nonce), 409 `unknown_challenge`
    unless its nonce is one of `fid`'s, unexpired; the seconds the nonce has left."""
    if request.nonce is None or request.signature is None:
        raise UnauthenticatedError(
            "an enrolment proves possession of its key: sign an enrolment challenge's nonce "
            "(POST /federations/{fid}/enrolment-challenges)",
            code=ErrorCode.BAD_SIGNATURE,
            field="signature",
        )
    try:
        verify(request.public_key, request.signing_payload(fid), request.signature)
    except IdentityError as e:
        raise UnauthenticatedError(
            f"the enrolment's signature does not verify under its public_key: {e}",
            code=ErrorCode.BAD_SIGNATURE,
            field="signature",
        ) from e
    return nonce_lifetime_s(await _challenge_key(store, fid), fid, request.nonce, now)


def consume_challenge(current: bytes | None, key: str, *, lifetime_s: float) -> Updates:
    """The write that marks the nonce under `key` used (`current`: its mark, None while unused) until it
    expires (`lifetime_s`), or 409 `unknown_challenge` if it was used."""
    if current is not None:
        raise ConflictError(
            "the enrolment's nonce was used: ask for a new challenge",
            code=ErrorCode.UNKNOWN_CHALLENGE,
            field="nonce",
        )
    return {key: Expiring(b"1", ttl_s=lifetime_s + 1.0)}


def admit(raw: bytes | None, *, key: HashField | None, role: Role, subject: str, now: datetime) -> bytes:
    """The record of an enrolment token (`raw`, None if absent) once it has enrolled `subject` as `role`;
    401 `bad_enrolment_token` unless it was issued for that role and id and has not expired, 409
    `enrolment_token_used` if it enrolled its party already."""
    if raw is None:
        raise UnauthenticatedError(
            f"a new {role.value} enrols with an enrolment token issued for its id; this one is unknown or revoked",
            code=ErrorCode.BAD_ENROLMENT_TOKEN,
        )
    assert key is not None  # a record was read, so from a field
    record = parse_record(raw, key=key[0], reader=EnrolmentTokenInfo, field=key[1])
    if record.role is not role or record.subject != subject:
        raise UnauthenticatedError(
            f"the enrolment token is for {record.role.value} {record.subject!r}, not {role.value} {subject!r}",
            code=ErrorCode.BAD_ENROLMENT_TOKEN,
        )
    if record.state is EnrolmentTokenState.USED:
        raise ConflictError(
            f"the enrolment token for {record.subject!r} was used at {record.used_at}; it enrols once",
            code=ErrorCode.ENROLMENT_TOKEN_USED,
        )
    if now >= record.expires_at:
        raise UnauthenticatedError(
            f"the enrolment token for {record.subject!r} expired at {record.expires_at}",
            code=ErrorCode.BAD_ENROLMENT_TOKEN,
        )
    used = record.model_copy(update={"state": EnrolmentTokenState.USED, "used_at": now})
    return used.model_dump_json().encode()


class EnrolmentTokenService:
    """Issue, list and revoke a federation's enrolment tokens (admin), and hand out challenges (anyone)."""

    def __init__(self, store: StateStore, federations: FederationService, *, clock: TimeSource) -> None:
        self._store = store
        self._federations = federations
        self._clock = clock

    async def issue(self, fid: str, request: EnrolmentTokenRequest) -> EnrolmentTokenIssued:
        await self._federations.require_running(fid)
        token, now = new_token(), await self._clock()
        info = EnrolmentTokenInfo(
            token_id=token_digest(token),
            role=request.role,
            subject=request.subject,
            issued_at=now,
            expires_at=now + timedelta(seconds=request.ttl_s),
        )
        await self._prune(fid, now)
        await self._store.hset(
            keyspace.fed_enrolment_tokens(fid), info.token_id, info.model_dump_json().encode()
        )
        log.info(
            "enrolment token issued",
            extra={"federation_id": fid, "data": {"role": request.role.value, "subject": request.subject}},
        )
        return EnrolmentTokenIssued(
            federation_id=fid,
            token_id=info.token_id,
            role=info.role,
            subject=info.subject,
            enrolment_token=token,
            issued_at=info.issued_at,
            expires_at=info.expires_at,
        )

    async def listing(self, fid: str) -> list[EnrolmentTokenInfo]:
        """Every token still kept, issued, used or expired (an expired one is kept until the next issue)."""
        await self._federations.spec(fid)
        now = await self._clock()
        records = await read_hash_records(
            self._store, keyspace.fed_enrolment_tokens(fid), EnrolmentTokenInfo, skip=True
        )
        tokens = list(records.values())
        return sorted((_as_of(token, now) for token in tokens), key=lambda t: (t.issued_at, t.token_id))

    async def revoke(self, fid: str, token_id: str) -> None:
        """Forget the token with digest `token_id`: it enrols nobody any more (404 if not kept)."""
        await self._federations.spec(fid)
        key = keyspace.fed_enrolment_tokens(fid)

        def forget(read: dict[HashField, bytes | None], _: dict[str, bytes | None]) -> Writes:
            if read[(key, token_id)] is None:
                raise NotFoundError(f"no enrolment token {token_id!r} in {fid!r}", field="token_id")
            return {(key, token_id): None}, {}

        await self._store.fields_transaction([(key, token_id)], forget)
        log.warning("enrolment token revoked", extra={"federation_id": fid, "data": {"token_id": token_id}})

    async def challenge(self, fid: str) -> EnrolmentChallenge:
        """A fresh nonce, answerable once within `ENROLMENT_CHALLENGE_TTL_S`."""
        await self._federations.require_running(fid)
        now = await self._clock()
        expires_at = now + timedelta(seconds=ENROLMENT_CHALLENGE_TTL_S)
        nonce = mint_nonce(await _challenge_key(self._store, fid), fid, expires_at)
        return EnrolmentChallenge(federation_id=fid, nonce=nonce, expires_at=expires_at)

    async def _prune(self, fid: str, now: datetime) -> None:
        """Drop the records of tokens that expired unused (a used one is kept: it says who enrolled whom)."""
        key = keyspace.fed_enrolment_tokens(fid)

        def expired(raw: bytes | None, token_id: str) -> bool:
            """Whether the record `raw` expired unused; a record that does not read back (quarantined by
            `read_hash_records`) counts as expired, so that it never blocks issuing."""
            if raw is None:
                return False
            try:
                info = parse_record(raw, key=key, reader=EnrolmentTokenInfo, field=token_id)
            except StoredRecordError:
                return True
            return _as_of(info, now).state is EnrolmentTokenState.EXPIRED

        def drop_if_expired(read: dict[HashField, bytes | None], _: dict[str, bytes | None]) -> Writes:
            return {field: None for field, raw in read.items() if expired(raw, field[1])}, {}

        kept = await read_hash_records(self._store, key, EnrolmentTokenInfo, skip=True)
        for token_id, raw in (await self._store.hgetall(key)).items():
            if token_id not in kept or expired(raw, token_id):
                await self._store.fields_transaction([(key, token_id)], drop_if_expired)


def _as_of(token: EnrolmentTokenInfo, now: datetime) -> EnrolmentTokenInfo:
    if token.state is EnrolmentTokenState.ISSUED and now >= token.expires_at:
        return token.model_copy(update={"state": EnrolmentTokenState.EXPIRED})
    return token
