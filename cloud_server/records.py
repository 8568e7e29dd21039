"""What the cloud keeps in the state store beside the wire models (never sent as such).

Everything the round state machine needs lives here or in a wire model in the store, so a restarted
cloud carries on from the store alone.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from protocol.messages import (
    Contribution,
    EdgeAggregate,
    FederationInfo,
    FederationSpec,
    FederationState,
    Identifier,
    LateSum,
    Role,
    RoundState,
    Sha256Hex,
)
from services.stored_records import describe, parse_record

ENDED_STATES = frozenset(
    {FederationState.COMPLETED, FederationState.STOPPED, FederationState.BUDGET_EXHAUSTED}
)
FINAL_ROUND_STATES = frozenset({RoundState.CLOSED, RoundState.FAILED})


class Record(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, ser_json_bytes="base64", val_json_bytes="base64"
    )

    def dump(self) -> bytes:
        return self.model_dump_json().encode()


class FederationRecord(Record):
    """The mutable part of a federation, written only in store transactions."""

    state: FederationState = FederationState.ACTIVE
    reason: str | None = None
    created_at: datetime
    he_fingerprint: Sha256Hex
    layout_size: int = Field(ge=1)
    layout_digest: Sha256Hex
    current_round: int | None = Field(default=None, ge=0)
    adapter_version: int = Field(default=0, ge=0)
    rounds_closed: int = Field(default=0, ge=0, description="rounds that produced an adapter version")
    basis_version: int | None = Field(
        default=None, ge=0, description="the current basis after a re-basing; None: the spec's seeded one"
    )
    plan_public_key: bytes | None = Field(
        default=None, description="the plan-signing key's public half; None: created before plans were signed"
    )

    @model_validator(mode="before")
    @classmethod
    def _without_shared_enrolment_digests(cls, data: Any) -> Any:
        """A record written before enrolment tokens were issued per party holds the digests of the shared
        per-role tokens, which enrol nobody now: dropped when read, so that its federation still opens."""
        if isinstance(data, dict):
            return {
                k: v for k, v in data.items() if k not in ("edge_enrolment_digest", "client_enrolment_digest")
            }
        return data

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    def basis(self, spec: FederationSpec) -> int:
        return spec.basis_version if self.basis_version is None else self.basis_version

    def info(self, spec: FederationSpec) -> FederationInfo:
        return FederationInfo(
            spec=spec,
            state=self.state,
            created_at=self.created_at,
            he_fingerprint=self.he_fingerprint,
            layout_size=self.layout_size,
            layout_digest=self.layout_digest,
            current_round=self.current_round,
            adapter_version=self.adapter_version,
            reason=self.reason,
            plan_public_key=self.plan_public_key,
        )


class TokenRecord(Record):
    """What an API token (stored by its SHA-256) stands for: an edge or a client, never the admin, whose
    credential lives in the settings only (a record with the admin role, written by whoever can write the
    store, must not become one)."""

    role: Role
    subject: Identifier

    @field_validator("role")
    @classmethod
    def _not_admin(cls, role: Role) -> Role:
        if role is Role.ADMIN:
            raise ValueError(
                "a stored token record cannot carry the role 'admin': admin calls use the admin token"
            )
        return role


class ClientStats(Record):
    """A client's participation, updated in the transaction that closes a round."""

    rounds_contributed: int = Field(default=0, ge=0)
    last_seen: datetime | None = None
    local_epsilon: float | None = Field(default=None, ge=0.0)


class StoredLate(Record):
    """A late bucket of a stored aggregate, without its ciphertext (stored after the round's own)."""

    origin_round: int = Field(ge=0)
    ciphertext_sha256: Sha256Hex
    ciphertext_bytes: int = Field(ge=1)
    contributions: tuple[Contribution, ...]
    plan_sha256: Sha256Hex | None = None

    @property
    def count(self) -> int:
        return len(self.contributions)

    @property
    def total_weight(self) -> float:
        return float(sum(c.weight for c in self.contributions))


class StoredAggregate(Record):
    """An accepted `EdgeAggregate` without its ciphertext (which follows it in the stored value).

    The signature is kept, so the edge's claim can be verified again later from the stored bytes.
    """

    edge_id: Identifier
    round: int = Field(ge=0)
    basis_version: int = Field(ge=0)
    idempotency_key: str
    ciphertext_sha256: Sha256Hex
    ciphertext_bytes: int = Field(ge=1)
    contributions: tuple[Contribution, ...]
    signature: bytes
    received_at: datetime
    late: tuple[StoredLate, ...] = ()
    plan_sha256: Sha256Hex | None = None
    mask_correction_bytes: int = Field(default=0, ge=0)  # after the late buckets' ciphertexts
    # `EdgeAggregate.signed_sha256`; absent in a sum stored before it was kept.
    signed_sha256: Sha256Hex | None = None

    @property
    def count(self) -> int:
        return len(self.contributions)

    @property
    def late_count(self) -> int:
        return sum(bucket.count for bucket in self.late)

    @property
    def total_weight(self) -> float:
        return float(sum(c.weight for c in self.contributions))


_HEADER_LENGTH = struct.Struct(">I")


class ForwardMark(Record):
    """What the cloud keeps for good of an edge sum a round took (`keyspace.fed_round_forwards`): enough to
    know the same forward again, as a repeat inside the retention window is known from the stored sum."""

    idempotency_key: str
    ciphertext_sha256: Sha256Hex
    # The digest of the whole signed sum (`EdgeAggregate.signed_sha256`), so that only the byte-identical sum
    # is taken as a repeat; absent in a mark written before it was kept.
    signed_sha256: Sha256Hex | None = None
    # What a round's status shows of the sum, so that reading the status never loads a stored ciphertext
    # (`RoundService.status`); absent in a mark written before they were kept.
    count: int | None = Field(default=None, ge=0)
    total_weight: float | None = Field(default=None, ge=0)
    ciphertext_bytes: int | None = Field(default=None, ge=1)
    late_count: int | None = Field(default=None, ge=0)
    received_at: datetime | None = None


def forward_mark(header: StoredAggregate) -> ForwardMark:
    """The mark of a stored sum, from its header."""
    return ForwardMark(
        idempotency_key=header.idempotency_key,
        ciphertext_sha256=header.ciphertext_sha256,
        signed_sha256=header.signed_sha256,
        count=header.count,
        total_weight=header.total_weight,
        ciphertext_bytes=header.ciphertext_bytes,
        late_count=header.late_count,
        received_at=header.received_at,
    )


_FORWARDS = TypeAdapter(dict[str, ForwardMark])
#: The plain JSON records beside the models, each read back through `services.stored_records`:
#: `fed_round_aggregate_digests` (edge id -> sha256), `fed_round_counted` (client id -> edge id),
#: `fed_ranks` (client id -> rank) and `fed_validation` ([round, loss], ...).
DIGESTS = TypeAdapter(dict[str, Sha256Hex])
COUNTED = TypeAdapter(dict[str, Identifier])
RANKS = TypeAdapter(dict[str, int])
VALIDATION = TypeAdapter(list[tuple[int, FiniteFloat]])


def read_forwards(raw: bytes | None, *, key: str) -> dict[str, ForwardMark]:
    """Edge id -> the mark of the sum it forwarded, as `keyspace.fed_round_forwards` holds them."""
    return parse_record(raw, key=key, reader=_FORWARDS) if raw is not None else {}


def dump_forwards(forwards: Mapping[str, ForwardMark]) -> bytes:
    return _FORWARDS.dump_json(dict(sorted(forwards.items())))


def ciphertext_digest(ciphertext: bytes | memoryview) -> str:
    return hashlib.sha256(ciphertext).hexdigest()


def pack_aggregate(aggregate: EdgeAggregate, *, received_at: datetime) -> bytes:
    """One store value: header length, header JSON, then the raw ciphertext (no base64 in the store)."""
    header = StoredAggregate(
        edge_id=aggregate.edge_id,
        round=aggregate.round,
        basis_version=aggregate.basis_version,
        idempotency_key=aggregate.idempotency_key,
        ciphertext_sha256=ciphertext_digest(aggregate.ciphertext),
        ciphertext_bytes=len(aggregate.ciphertext),
        contributions=aggregate.contributions,
        signature=aggregate.signature,
        received_at=received_at,
        plan_sha256=aggregate.plan_sha256,
        mask_correction_bytes=len(aggregate.mask_correction or b""),
        signed_sha256=aggregate.signed_sha256,
        late=tuple(
            StoredLate(
                origin_round=bucket.origin_round,
                ciphertext_sha256=ciphertext_digest(bucket.ciphertext),
                ciphertext_bytes=len(bucket.ciphertext),
                contributions=bucket.contributions,
                plan_sha256=bucket.plan_sha256,
            )
            for bucket in aggregate.late
        ),
    ).dump()
    late = b"".join(bucket.ciphertext for bucket in aggregate.late)
    correction = aggregate.mask_correction or b""
    return _HEADER_LENGTH.pack(len(header)) + header + aggregate.ciphertext + late + correction


def stored_edge_aggregate(value: bytes, *, federation_id: str) -> EdgeAggregate:
    """The `EdgeAggregate` of `federation_id` that `pack_aggregate` stored as `value`, signature included, so
    that the close can check it as `receive` did (`cloud_server.sum_checks`). Raises `ValueError` (pydantic's
    `ValidationError` is one) if it does not read back as one."""
    header, own = unpack_aggregate(value)
    correction = unpack_mask_correction(value)
    return EdgeAggregate(
        federation_id=federation_id,
        round=header.round,
        basis_version=header.basis_version,
        edge_id=header.edge_id,
        ciphertext=bytes(own),
        contributions=header.contributions,
        idempotency_key=header.idempotency_key,
        signature=header.signature,
        late=tuple(
            LateSum(
                origin_round=bucket.origin_round,
                ciphertext=bytes(ciphertext),
                contributions=bucket.contributions,
                plan_sha256=bucket.plan_sha256,
            )
            for bucket, ciphertext in unpack_late(value)
        ),
        plan_sha256=header.plan_sha256,
        mask_correction=None if correction is None else bytes(correction),
    )


def unpack_aggregate(value: bytes) -> tuple[StoredAggregate, memoryview]:
    """The header and the round's own ciphertext (late buckets' ciphertexts: `unpack_late`)."""
    (length,) = _HEADER_LENGTH.unpack_from(value)
    start = _HEADER_LENGTH.size
    header = StoredAggregate.model_validate_json(value[start : start + length])
    body = start + length
    return header, memoryview(value)[body : body + header.ciphertext_bytes]


def readable_aggregates(
    values: Mapping[str, bytes], sealed: Mapping[str, str] | None = None
) -> tuple[dict[str, bytes], dict[str, str]]:
    """(the stored aggregates, edge id -> value, that read back; edge id -> why each other does not): a
    record written before a bound existed, or altered in the store, must not raise for its round, nor stall
    it. A value reads back when it is the one recorded when the round was sealed (`sealed`: edge id ->
    sha256 of the value), its header parses, and each ciphertext it holds has the digest its header names.
    An edge in `sealed` with no value is unreadable too. Without `sealed` (a status shown, not a round
    closed), only the header is read."""
    readable: dict[str, bytes] = {}
    unreadable = {edge_id: "no stored value" for edge_id in sorted((sealed or {}).keys() - values.keys())}
    for edge_id, value in values.items():
        try:
            if sealed is None:
                unpack_aggregate(value)
            else:
                check_stored(value, digest=sealed.get(edge_id))
        except (ValueError, struct.error) as e:  # pydantic's ValidationError is a ValueError
            unreadable[edge_id] = (
                describe(e) if isinstance(e, ValidationError) else f"{type(e).__name__}: {e}"
            )
        else:
            readable[edge_id] = value
    return readable, unreadable


def check_stored(value: bytes, *, digest: str | None) -> None:
    """Raise `ValueError` unless `value` hashes to `digest` (the digest recorded with it; None: none was)
    and its ciphertexts hash to what its header names."""
    if digest is None:
        raise ValueError("not recorded in the round's aggregate digests")
    if hashlib.sha256(value).hexdigest() != digest:
        raise ValueError("its sha256 is not the one recorded in the round's aggregate digests")
    header, own = unpack_aggregate(value)
    if ciphertext_digest(own) != header.ciphertext_sha256:
        raise ValueError("its ciphertext's sha256 is not the one its header names")
    for index, (bucket, ciphertext) in enumerate(unpack_late(value)):
        if ciphertext_digest(ciphertext) != bucket.ciphertext_sha256:
            raise ValueError(f"late bucket {index}'s ciphertext sha256 is not the one its header names")


def unpack_late(value: bytes) -> list[tuple[StoredLate, memoryview]]:
    """Each late bucket of a stored aggregate with its ciphertext, in the order the edge sent them."""
    header, own = unpack_aggregate(value)
    (length,) = _HEADER_LENGTH.unpack_from(value)
    offset = _HEADER_LENGTH.size + length + len(own)
    view = memoryview(value)
    buckets = []
    for bucket in header.late:
        buckets.append((bucket, view[offset : offset + bucket.ciphertext_bytes]))
        offset += bucket.ciphertext_bytes
    return buckets


def unpack_mask_correction(value: bytes) -> memoryview | None:
    """A masking federation's stored aggregate: the residues that remove its cohort's masks (else None)."""
    header, _ = unpack_aggregate(value)
    if not header.mask_correction_bytes:
        return None
    return memoryview(value)[len(value) - header.mask_correction_bytes :]
