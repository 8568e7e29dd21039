"""Wire models: everything that crosses a process boundary between hospitals, edges, cloud and admins.

Rules (STYLE.md): every message carries `protocol_version`; schemes, stages and statuses are enums;
fields are never removed or repurposed and new ones are optional; every size is bounded.
Bytes travel as base64 in JSON.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Protocol, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from protocol import examples as _examples
from protocol import signing
from protocol.crypto.params import HEKind, HEParams, PaillierParams
from protocol.distributions import Distribution
from protocol.ed25519 import check_public_key
from protocol.wire_schema import Base64, close_pattern_maps

PROTOCOL_VERSION: Literal[1] = 1

# Size limits. A CKKS upload costs ~32 bytes per parameter, so 512 MiB covers a 16 M-parameter adapter.
MAX_CIPHERTEXT_BYTES = 512 * 1024 * 1024
MAX_SIGNATURE_BYTES = 512
MAX_CLIENTS_PER_ROUND = 10_000
MAX_TARGET_MODULES = 64
MAX_R = 256
#: The range of an upload's weight. An agent applies `RoundPlan.weight_for`, in [1 / MAX_WEIGHT_CAP, 1] (at
#: most 1 under central DP, which the cloud checks); without central DP a weight may be larger, up to
#: MAX_WEIGHT. The floor keeps dividing a sum by its total weight finite (a weight of 1e-300 made an all-inf
#: adapter); the ceiling keeps a sum of MAX_CLIENTS_PER_ROUND weights far from overflowing.
MAX_WEIGHT = 1e6
MAX_WEIGHT_CAP = 10**6
MIN_WEIGHT = 1.0 / MAX_WEIGHT_CAP
#: The largest epsilon a hospital or a budget may state. exp(epsilon) overflows a double past ~709, so an
#: epsilon beyond 10^4 bounds nothing; the cap keeps every sum and comparison of epsilons finite.
MAX_EPSILON = 1e4
#: The largest noise multiplier (sigma) an accountant history may carry: beyond it an RDP term is below
#: 1e-12 (alpha / (2 sigma^2)), so a larger sigma spends nothing more and is refused rather than kept.
MAX_NOISE_MULTIPLIER = 1e6
#: The most examples a hospital may state it trained on or held out (as at enrolment). A count reaches float
#: arithmetic (the round's example-weighted validation loss); an unbounded one (10**400, which JSON carries)
#: no float can hold.
MAX_EXAMPLES = 10**9
#: The largest std of a distributed-noise share an upload may declare (`NoiseShare.std`'s bound).
MAX_SHARE_STD = 1e6

#: A module name as PEFT matches it (`query`, `attention.self.value`): ASCII, as the schema states it.
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")]
Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$", description="lower-case id")]
Nonce = Annotated[str, Field(pattern=r"^[0-9a-f]{32,64}$", description="hex, at least 128 random bits")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Ciphertext = Annotated[bytes, Base64(min_bytes=1, max_bytes=MAX_CIPHERTEXT_BYTES)]
Signature = Annotated[bytes, Base64(min_bytes=0, max_bytes=MAX_SIGNATURE_BYTES)]


class Message(BaseModel):
    """Base of every wire model: strict about unknown fields, bytes as base64 in JSON."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        ser_json_bytes="base64",
        val_json_bytes="base64",
        use_enum_values=False,
    )

    protocol_version: Literal[1] = PROTOCOL_VERSION

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Every map with a key pattern says that other keys are refused (`close_pattern_maps`)."""
        json_schema = handler(core_schema)
        close_pattern_maps(handler.resolve_ref_schema(json_schema))
        return json_schema


class Strategy(StrEnum):
    """How client updates combine (`protocol.strategies`: the rule, its client-side hook, its constraints)."""

    FFA = "ffa"
    FEDIT = "fedit"
    FEDROT = "fedrot"
    CLAIR = "clair"


class TaskType(StrEnum):
    """What the hospitals' model learns (`client_agent.tasks`): a label per text, or an answer per prompt."""

    SEQUENCE_CLASSIFICATION = "sequence_classification"  # encoder + FFA-LoRA + mean-pooled linear head
    CAUSAL_LM = "causal_lm"  # decoder + FFA-LoRA, loss on the answer tokens of instruction/answer pairs


class NoiseMechanism(StrEnum):
    GAUSSIAN = "gaussian"
    LAPLACE = "laplace"
    NONE = "none"


class Weighting(StrEnum):
    """How a hospital's clipped delta is weighted. Every weight is at most 1, so one hospital moves the
    weighted sum by at most the clip norm `C`: the sensitivity the central noise is calibrated to."""

    UNIFORM = "uniform"  # every hospital counts once
    CAPPED_EXAMPLES = "capped_examples"  # min(examples, weight_cap) / weight_cap: small sites count less


class NoiseSchedule(StrEnum):
    """Central noise over rounds: constant, or loose early and strict late (seed 001)."""

    CONSTANT = "constant"
    LOOSE_TO_STRICT = "loose_to_strict"


class RoundState(StrEnum):
    OPEN = "open"
    COLLECTING = "collecting"
    AGGREGATING = "aggregating"
    CLOSED = "closed"
    FAILED = "failed"


class FederationState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    STOPPED = "stopped"
    BUDGET_EXHAUSTED = "budget_exhausted"
    COMPLETED = "completed"


class ErrorCode(StrEnum):
    """Machine-readable reasons for a 4xx/5xx, shared by every service."""

    INVALID_REQUEST = "invalid_request"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    UNKNOWN_CLIENT = "unknown_client"
    UNKNOWN_FEDERATION = "unknown_federation"
    WRONG_ROUND = "wrong_round"
    # 409 + Retry-After: an upload for a round after the edge's plan (the edge is fetching it); retry
    ROUND_NOT_OPEN_YET = "round_not_open_yet"
    ROUND_CLOSED = "round_closed"
    WRONG_BASIS = "wrong_basis"
    BAD_CIPHERTEXT = "bad_ciphertext"
    PAYLOAD_TOO_LARGE = "payload_too_large"  # 413, the route's limit in `detail.limit`
    # 429 + Retry-After: over the caller's rate limit, its concurrency cap or the long-poll caps
    TOO_MANY_REQUESTS = "too_many_requests"
    DUPLICATE_UPLOAD = "duplicate_upload"
    # 409: a hospital the aggregate names is already in another edge's accepted sum for that round
    # (detail: `client_ids`, `round`, `counted_at`)
    CLIENT_COUNTED_ELSEWHERE = "client_counted_elsewhere"
    REPLAY = "replay"
    BAD_SIGNATURE = "bad_signature"
    TOO_FEW_CLIENTS = "too_few_clients"
    BUDGET_EXHAUSTED = "budget_exhausted"
    FEDERATION_NOT_ACTIVE = "federation_not_active"
    VERSION_PRUNED = "version_pruned"  # 410: the adapter version's vector is past `retain_versions`
    UNSUPPORTED_VERSION = "unsupported_version"
    CONFLICT = "conflict"
    # 409: the federation holds `FederationSpec.max_clients` hospitals (or `max_edges` edges); a new one
    # cannot enrol (detail: `max_clients` or `max_edges`)
    FEDERATION_FULL = "federation_full"
    # 401: no enrolment token, or one that is unknown, revoked, expired or bound to another role or id
    BAD_ENROLMENT_TOKEN = "bad_enrolment_token"  # noqa: S105 - a code, not a secret
    ENROLMENT_TOKEN_USED = "enrolment_token_used"  # noqa: S105 - 409: the token enrolled its party already
    UNKNOWN_CHALLENGE = "unknown_challenge"  # 409: the enrolment's nonce was never issued, expired or used
    # 409: an enrolled edge re-enrolled with another URL; an admin changes it (`PUT .../edges/{eid}/url`)
    EDGE_URL_CHANGED = "edge_url_changed"
    STORE_UNAVAILABLE = "store_unavailable"  # 503: the state store is down; retry, nothing was written
    PLAN_MISMATCH = "plan_mismatch"  # 409: trained under another plan than the one held for the round
    WRONG_COHORT = "wrong_cohort"  # 409: a masking message for another edge's cohort or another round
    NOT_IN_COHORT = "not_in_cohort"  # 403: the hospital is not in the masking stage it posts to or reads
    STAGE_PENDING = "stage_pending"  # 409 + Retry-After: the masking stage asked for has not closed yet
    STAGE_CLOSED = "stage_closed"  # 409: the masking stage posted to has closed
    COHORT_FAILED = "cohort_failed"  # 409: the round's masking cohort failed; nothing of it is forwarded
    # 400: a manifest line is not signed by the client it names (detail: `client_ids`, `round`)
    BAD_CONTRIBUTION_SIGNATURE = "bad_contribution_signature"
    # 409: a record the service stored does not read back (altered in the store, or written before a bound
    # existed); it was copied to a quarantine key and logged (detail: `key`)
    STORED_RECORD_CORRUPT = "stored_record_corrupt"
    # 401: an edge's call (or enrolment) to a cloud that serves TLS came over a connection without a client
    # certificate verified against the federation's CA
    CLIENT_CERTIFICATE_REQUIRED = "client_certificate_required"
    # 403: the connection's client certificate does not name the edge (`fedlora://<fid>/edge/<edge id>`)
    # whose token or enrolment the request carries (detail: `expected`)
    CLIENT_CERTIFICATE_MISMATCH = "client_certificate_mismatch"
    INTERNAL = "internal"


class DropReason(StrEnum):
    """Why uploads a service acknowledged (202) did not reach the model: each is counted in
    `fedlora_uploads_dropped_total{reason}`, logged, and shown in the round's status (docs/api.md)."""

    TOO_FEW_CLIENTS = "too_few_clients"  # a sum (a round's own, or a late bucket past max_staleness) below k
    TOO_LATE = (
        "too_late"  # the cloud closed the round, and late uploads are off or the sum is past max_staleness
    )
    REFUSED = "refused"  # the cloud refused the edge's aggregate for another reason than a closed round
    CLIENT_REFUSED = "client_refused"  # the cloud refused a hospital in the edge's sum; the others went on
    PLAN_MISSING = "plan_missing"  # the edge no longer holds the plan a late bucket was made under
    BASIS_CHANGED = "basis_changed"  # a late bucket trained in another basis than the round it would join
    MASKING_FAILED = "masking_failed"  # the edge's masking cohort failed, or its sum did not unmask (cloud)
    FEDERATION_ENDED = "federation_ended"  # the edge still held them when the federation ended
    LATE_LEFT_OUT = "late_left_out"  # cloud: a late group would hold back columns the round publishes
    FLAGGED = "flagged"  # cloud: the robust strategy flagged the edge's sum as contaminated and left it out
    ROUND_FAILED = "round_failed"  # cloud: the round failed; the aggregates it held are not in any model
    # edge: the round's stored manifest did not read back; it and the sum were quarantined
    RECORD_QUARANTINED = "record_quarantined"
    # cloud: the edge's packed sum decrypted to a slot above what its uploads can sum to, or past the last slot
    OUT_OF_RANGE = "out_of_range"


#: The longest an edge keeps trying to forward a round after its upload deadline, unless the spec says
#: otherwise (`FederationSpec.forward_budget_s`).
FORWARD_BUDGET_S = 30.0
#: The clock difference between the cloud and an edge that deadlines tolerate, unless the spec says otherwise
#: (`FederationSpec.max_clock_skew_s`).
MAX_CLOCK_SKEW_S = 5.0


BudgetAgainst = Literal["public", "decrypting_cloud"]


class LocalDPConfig(BaseModel):
    """Example-level DP-SGD inside each hospital (Opacus)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = True
    epsilon: float = Field(default=8.0, gt=0.0, le=100.0, description="target over all planned rounds")
    delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0, le=1e3, description="per-example clip")
    accountant: Literal["rdp", "prv"] = "rdp"


class CentralDPConfig(BaseModel):
    """Client-level DP on the weighted sum of clipped deltas (DP-FedAvg, McMahan et al. 2018).

    Adjacent federations differ in one hospital's whole contribution (its delta replaced by zero). Each
    delta is clipped to `clip_norm` (L2 for Gaussian noise, L1 for Laplace) and weighted by at most 1, so
    the sum moves by at most `C` plus what encoding for encryption adds (`protocol.sensitivity`). The noise
    on the sum is `N(0, (z C)^2)` (Gaussian) or `Laplace(z C)` per coordinate, with `z` this round's
    multiplier from `schedule`. The cloud adds it after decrypting, or, with `distributed`, every hospital
    adds its share before encrypting (Gaussian shares under CKKS, Skellam shares under packed Paillier) and
    nobody ever sees a noise-free sum. The ledger keeps two columns: the public epsilon (the released
    adapters) and the epsilon against the decrypting cloud with `colluding_clients` hospitals;
    `budget_against` says which one `epsilon_budget` caps.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mechanism: NoiseMechanism = NoiseMechanism.GAUSSIAN
    noise_multiplier: float = Field(
        default=0.0, ge=0.0, le=100.0, description="z: noise std (Gaussian) or scale (Laplace) over C"
    )
    clip_norm: float = Field(
        default=1.0, gt=0.0, le=1e6, description="C: each client's delta is clipped to it"
    )
    schedule: NoiseSchedule = NoiseSchedule.CONSTANT
    epsilon_budget: float | None = Field(
        default=None,
        gt=0.0,
        le=MAX_EPSILON,
        description="stop when the next round exceeds it (at most MAX_EPSILON)",
    )
    delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    accountant: Literal["rdp", "prv"] = Field(
        default="rdp", description="prv: exact accounting (Gaussian mechanism only)"
    )
    weighting: Weighting = Weighting.UNIFORM
    weight_cap: int = Field(
        default=1000,
        ge=1,
        le=MAX_WEIGHT_CAP,
        description="examples at which a hospital's weight reaches 1; at most MAX_WEIGHT_CAP, so that a weight "
        "is never below MIN_WEIGHT",
    )
    distributed: bool = Field(
        default=False, description="hospitals add the noise in shares before encrypting"
    )
    dropout_margin: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="shares are sized for (1 - margin) of the planned clients, so that the decrypted sum "
        "keeps its full noise when up to that fraction drops out",
    )
    colluding_clients: int = Field(
        default=0,
        ge=0,
        le=MAX_CLIENTS_PER_ROUND,
        description="the column against the decrypting cloud assumes it colludes with this many hospitals, "
        "who know their own noise shares: only the other shares that arrived count",
    )
    budget_against: BudgetAgainst = Field(
        default="public",
        description="which epsilon `epsilon_budget` caps: 'public' (anyone who sees the released adapters) or "
        "'decrypting_cloud' (the cloud that decrypts the sums, with `colluding_clients` hospitals; needs "
        "`distributed`)",
    )

    @model_validator(mode="after")
    def _check_noise(self) -> CentralDPConfig:
        noisy = self.mechanism is not NoiseMechanism.NONE and self.noise_multiplier > 0
        if self.epsilon_budget is not None and not noisy:
            raise ValueError(
                f"epsilon_budget {self.epsilon_budget} needs central noise: set noise_multiplier > 0 and a "
                f"mechanism (got mechanism {self.mechanism.value!r}, noise_multiplier {self.noise_multiplier})"
            )
        if self.accountant == "prv" and self.mechanism is NoiseMechanism.LAPLACE:
            raise ValueError("accountant 'prv' covers the Gaussian mechanism only; use 'rdp' for 'laplace'")
        if self.distributed and not noisy:
            raise ValueError("distributed needs noise: set noise_multiplier > 0 and mechanism 'gaussian'")
        if self.distributed and self.mechanism is not NoiseMechanism.GAUSSIAN:
            raise ValueError(
                f"distributed noise is Gaussian (or Skellam under packed Paillier); mechanism "
                f"{self.mechanism.value!r} cannot be split into shares"
            )
        if self.budget_against == "decrypting_cloud" and not self.distributed:
            raise ValueError(
                "budget_against 'decrypting_cloud' needs distributed noise: without it the cloud adds all "
                "the noise itself and sees the noise-free sum, so against it there is no client-level "
                "guarantee to budget; set distributed to true or budget_against to 'public'"
            )
        return self

    @property
    def noisy(self) -> bool:
        return self.mechanism is not NoiseMechanism.NONE and self.noise_multiplier > 0


class RankPolicyKind(StrEnum):
    FIXED = "fixed"  # every client at min(its max_rank, r_max)
    DATA_SIZE = "data_size"  # seed 001's first stage: the initial rank grows with the client's data


class RankPolicy(BaseModel):
    """How the cloud assigns each client's LoRA rank (within its own `max_rank` and `r_max`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: RankPolicyKind = RankPolicyKind.FIXED
    examples_for_r_max: int = Field(
        default=5000, ge=1, le=10**9, description="data_size: a client with this many examples gets r_max"
    )
    min_rank: int = Field(default=1, ge=1, le=MAX_R)
    grow_energy: float | None = Field(
        default=None,
        gt=0.0,
        le=100.0,
        description="seed 001's second stage: after each round, a client whose highest column of the global "
        "update carries at least this multiple of its columns' mean energy doubles its rank (within its cap)",
    )
    rebase_rank: int | None = Field(
        default=None,
        ge=1,
        le=MAX_R,
        description="seed 001's third stage: when the validation loss first settles (`convergence`), the cloud "
        "re-bases the global adapter to this common rank by SVD of each module's B A (a new basis version whose "
        "A rows it broadcasts), every client trains at it, and the federation goes on until the loss settles "
        "again",
    )


class ConvergenceConfig(BaseModel):
    """Stop when the federation's validation loss settles (seed 001: "when the global loss changes less than
    a threshold"). Each hospital holds out `validation_fraction` of its data, never trains on it, and reports
    the loss of the round's starting adapter on it; the cloud averages the losses by examples.

    The held-out examples are patients too: each hospital releases their loss with DP (per-example losses
    clipped to `loss_clip`, Gaussian noise on the sum, calibrated to its own example-level budget and charged
    in its accountant history; `client_agent.releases`). The averaged loss is therefore noisy, and
    `min_delta` should sit above that noise."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    min_delta: float = Field(gt=0.0, le=1e3, description="a change below this counts as no progress")
    patience: int = Field(default=2, ge=1, le=1000, description="rounds in a row without progress")
    validation_fraction: float = Field(default=0.1, gt=0.0, le=0.5)
    loss_clip: float = Field(
        default=3.0,
        gt=0.0,
        le=1e3,
        description="each held-out example's loss is clipped to [0, loss_clip] before the noisy sum (its "
        "sensitivity)",
    )


MAX_STALENESS = 100


class LateUploadConfig(BaseModel):
    """Uploads that reach their edge after their round closed there (a slow hospital, a long network outage).

    An upload for round `r - s` arriving while round `r` is open at the edge (`1 <= s <= max_staleness`) is
    added into a separate running sum per origin round (a *bucket*), forwarded with round `r`'s aggregate
    when it holds at least `min_clients_per_edge` uploads (the `k` rule, per bucket; a smaller bucket is
    dropped and counted), decrypted by the cloud per staleness and weighted by `decay ** s` (Xie et al.
    2019, FedAsync's polynomial/exponential staleness weights) after decryption: the add-only CKKS context
    cannot multiply a ciphertext by a scalar, and packed Paillier only by an integer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_staleness: int = Field(
        default=1, ge=1, le=MAX_STALENESS, description="rounds an upload may be late by"
    )
    decay: float = Field(default=0.5, gt=0.0, le=1.0, description="a late update weighs decay ** staleness")

    def factor(self, staleness: int) -> float:
        return self.decay**staleness


class Compression(BaseModel):
    """Upload compression under packed Paillier (seed 001's "INT8" transport): hospitals round their
    clipped update at random onto the quantisation lattice (`he.rounding: stochastic`, `protocol.rounding`)
    and the federation quantises to the fewest bits whose rounding stays within these tolerances
    (`protocol.compression.choose_quant_bits`): the aggregate's rounding error at most `error_fraction` of
    the DP noise's std, and the sensitivity the ledger charges at most `(1 + inflation_fraction) C`.

    `bits` `auto`: the cloud chooses `he.quant_bits` and `he.clip` (the least range the update and the noise
    shares need) when it creates the federation, for its adapter's size, and stores the spec with them;
    `given`: the spec's own `he.quant_bits` and `he.clip` are kept, and the cloud refuses the federation (422
    naming `he.quant_bits`) when they are too few for its noise.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    bits: Literal["auto", "given"] = Field(
        default="auto",
        description="auto: the cloud sets he.quant_bits and he.clip; given: it checks the spec's own",
    )
    error_fraction: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="the sum's rounding error std (sqrt(n) step / 2) over the DP noise std, at most",
    )
    inflation_fraction: float = Field(
        default=0.05,
        gt=0.0,
        le=1.0,
        description="what the rounding adds to the sensitivity, over the clip norm, at most",
    )


class TrainingConfig(BaseModel):
    """Local optimisation settings a round plan hands to clients."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    learning_rate: float = Field(default=0.5, gt=0.0, le=100.0)
    #: The classification head's own rate (None: `learning_rate`): its input is a unit-norm sentence
    #: embedding, so at the adapter's rate its weight grows too slowly to move predictions off the class
    #: prior (docs/results.md, "A recipe that learns").
    head_learning_rate: float | None = Field(default=None, gt=0.0, le=1000.0)
    local_steps: int = Field(default=20, ge=1, le=100_000)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    max_seq_length: int = Field(default=64, ge=8, le=4096)
    optimizer: Literal["sgd", "adam"] = "sgd"


SHARE_TAIL_SIGMAS = 8.0  # a share exceeds 8 std with probability ~1e-15 per coordinate


def schedule_multiplier(dp: CentralDPConfig, *, round_index: int, rounds: int) -> float:
    """The `z` of one round. `loose_to_strict` (seed 001: loose early, strict late) ramps it linearly
    from `z / 2` in the first round to `3 z / 2` in the last, so its mean over the rounds is `z`."""
    if not dp.noisy:
        return 0.0
    if dp.schedule is NoiseSchedule.CONSTANT or rounds <= 1:
        return dp.noise_multiplier
    progress = min(max(round_index, 0), rounds - 1) / (rounds - 1)
    return dp.noise_multiplier * (0.5 + progress)


def shares_for(dp: CentralDPConfig, planned_clients: int) -> int:
    """How many shares make up the target noise: the planned clients less the dropout margin."""
    return max(1, math.floor(planned_clients * (1.0 - dp.dropout_margin)))


def max_share_std(dp: CentralDPConfig, *, min_clients: int) -> float:
    """The largest share std any round can ask for (the strictest round, the fewest clients)."""
    top = dp.noise_multiplier * (1.5 if dp.schedule is NoiseSchedule.LOOSE_TO_STRICT else 1.0)
    return top * dp.clip_norm / math.sqrt(shares_for(dp, min_clients))


class FederationSpec(Message):
    """What a federation is: model, adapter shape, encryption, privacy and round policy."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [_examples.FEDERATION_SPEC, _examples.FEDERATION_SPEC_MINIMAL]}
    )

    federation_id: Identifier
    base_model: str = Field(default="sentence-transformers/all-MiniLM-L6-v2", min_length=1, max_length=256)
    task_type: TaskType = Field(
        default=TaskType.SEQUENCE_CLASSIFICATION,
        description="sequence_classification: an encoder with a trained head (num_labels classes); causal_lm: "
        "a decoder (AutoModelForCausalLM) whose adapter alone trains, with no head (num_labels unused)",
    )
    num_labels: int = Field(default=2, ge=2, le=10_000)
    label_names: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] | None = Field(
        default=None,
        max_length=10_000,
        description="the classes in order (label i is label_names[i]); a hospital's data file maps its labels "
        "by these names, never by which labels its rows happen to hold. None: the labels 0 .. num_labels - 1",
    )
    target_modules: tuple[ModuleName, ...] = Field(
        default=("query", "value"),
        min_length=1,
        max_length=MAX_TARGET_MODULES,
        json_schema_extra={"uniqueItems": True},  # `_check_targets` refuses duplicates
    )
    layers_to_transform: tuple[int, ...] | None = None
    r_max: int = Field(default=8, ge=1, le=MAX_R)
    lora_alpha: float = Field(default=8.0, gt=0.0, le=1e4)
    seed: int = Field(default=0, ge=0, lt=2**63)
    basis_version: int = Field(default=0, ge=0)
    strategy: Strategy = Strategy.FFA
    #: The default federation has the full guarantee of docs/security.md: packed Paillier with the uploads
    #: masked below it, with room for a delta of norm 1 plus distributed noise shares at 20 bits a value.
    he: HEParams = Field(default_factory=lambda: PaillierParams(masking=True, clip=4.0, quant_bits=20))
    compression: Compression | None = Field(
        default=None,
        description="quantise uploads to the fewest bits the DP noise allows, rounding at random (packed "
        "Paillier with Gaussian central noise); None: he.quant_bits as given",
    )
    local_dp: LocalDPConfig = Field(default_factory=LocalDPConfig)
    central_dp: CentralDPConfig = Field(default_factory=CentralDPConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    rank_policy: RankPolicy = Field(default_factory=RankPolicy)
    convergence: ConvergenceConfig | None = None
    late_uploads: LateUploadConfig | None = Field(
        default=None, description="fold uploads that miss their round into a later one (default: refuse them)"
    )
    normalize_rank_columns: bool = Field(
        default=False,
        description="divide each LoRA column of B (row of A) by the weight of the clients whose rank reaches "
        "it, not by the total weight, so that high-rank columns are not diluted by low-rank clients. With "
        "mixed ranks the result is then not the weighted mean of the clients' B A (only the plain division "
        "is), and the noise on a column is the sum's over that smaller weight (RoundStatus.column_noise_std)",
    )
    rounds: int = Field(default=3, ge=1, le=100_000)
    min_clients_per_edge: int = Field(
        default=2,
        ge=2,
        le=MAX_CLIENTS_PER_ROUND,
        description="k: at least 2, so that no sum an edge forwards or the cloud decrypts is one hospital's update",
    )
    max_clients: int = Field(
        default=MAX_CLIENTS_PER_ROUND,
        ge=2,
        le=MAX_CLIENTS_PER_ROUND,
        description="hospitals the federation enrols at most (a new one past it is refused, 409 "
        "federation_full); at most MAX_CLIENTS_PER_ROUND, the size a round plan holds",
    )
    max_edges: int = Field(
        default=1000,
        ge=1,
        le=MAX_CLIENTS_PER_ROUND,
        description="edges the federation enrols at most (a new one past it is refused, 409 federation_full)",
    )
    quorum: float = Field(
        default=1.0, gt=0.0, le=1.0, description="fraction of an edge's clients it waits for"
    )
    round_deadline_s: float = Field(default=600.0, gt=0.0, le=7 * 24 * 3600.0)
    upload_deadline_s: float = Field(default=540.0, gt=0.0, le=7 * 24 * 3600.0)
    forward_budget_s: float = Field(
        default=FORWARD_BUDGET_S,
        gt=0.0,
        le=24 * 3600.0,
        description="the longest an edge retries a round's forward after its upload deadline (later, a sum "
        "the cloud refuses as closed is carried into a later round as a late bucket, or counted as dropped)",
    )
    max_clock_skew_s: float = Field(
        default=MAX_CLOCK_SKEW_S,
        gt=0.0,
        le=3600.0,
        description="the clock difference between the cloud and an edge the deadlines tolerate",
    )

    @field_validator("target_modules")
    @classmethod
    def _check_targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"target_modules has duplicates: {list(value)}")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> FederationSpec:
        names = self.label_names
        if names is not None and (len(names) != self.num_labels or len(set(names)) != len(names)):
            raise ValueError(
                f"label_names must name {self.num_labels} distinct classes (num_labels), got {list(names)}"
            )
        if self.upload_deadline_s > self.round_deadline_s:
            raise ValueError(
                f"upload_deadline_s ({self.upload_deadline_s}) must not exceed round_deadline_s "
                f"({self.round_deadline_s}): edges need time to forward"
            )
        needed = self.forward_budget_s + self.max_clock_skew_s
        if self.deadline_margin_s < needed:
            raise ValueError(
                f"round_deadline_s - upload_deadline_s ({self.round_deadline_s} - {self.upload_deadline_s} = "
                f"{self.deadline_margin_s:g}) must cover forward_budget_s ({self.forward_budget_s}) + "
                f"max_clock_skew_s ({self.max_clock_skew_s}) = {needed:g}: an edge that forwards at its "
                "upload deadline must reach the cloud before the round closes there"
            )
        if self.task_type is TaskType.CAUSAL_LM and self.strategy in (Strategy.FEDIT, Strategy.FEDROT):
            raise ValueError(
                f"task_type 'causal_lm' trains B alone (FFA-LoRA): strategy must be 'ffa' or 'clair', got "
                f"{self.strategy.value!r}"
            )
        if self.task_type is TaskType.CAUSAL_LM and self.training.head_learning_rate is not None:
            raise ValueError(
                "task_type 'causal_lm' has no classification head: training.head_learning_rate must be unset, "
                f"got {self.training.head_learning_rate}"
            )
        if self.central_dp.distributed and self.he.kind is HEKind.NONE:
            raise ValueError(
                "central_dp.distributed protects only an encrypted sum: with he.kind 'none' the edge would see "
                "each update with a fraction of the noise; choose 'ckks' or 'paillier'"
            )
        bound = self.he.value_bound
        # With compression `auto` the cloud sets he.clip to this range itself (`protocol.compression`).
        auto_range = self.compression is not None and self.compression.bits == "auto"
        if self.central_dp.distributed and bound is not None and not auto_range:
            # Every noisy coordinate must fit the fixed-point range, or packing would clip the noise.
            needed = self.central_dp.clip_norm + SHARE_TAIL_SIGMAS * max_share_std(
                self.central_dp, min_clients=self.min_clients_per_edge
            )
            if bound < needed:
                raise ValueError(
                    f"he.clip {bound} leaves no room for the Skellam noise shares: each coordinate "
                    f"holds up to clip_norm + {SHARE_TAIL_SIGMAS:g} share std = {needed:.4g}; raise he.clip "
                    "(or quant_bits with it to keep precision)"
                )
        self._check_compression()
        # With `auto` the submitted he.quant_bits and he.clip are placeholders: the cloud plans both and
        # checks the planned ones (`protocol.compression.plan_compression`).
        ring = self.he.ring_problem() if isinstance(self.he, PaillierParams) and not auto_range else None
        if ring is not None:
            raise ValueError(f"he: {ring}")
        he_range = self.he.max_abs_value
        if he_range < self.central_dp.clip_norm and not auto_range:
            raise ValueError(
                f"he: its max_abs_value {he_range:g} (what one value may hold so that "
                f"{self.he.max_summands} summands stay short of the point where a sum wraps) is below "
                f"central_dp.clip_norm {self.central_dp.clip_norm:g}, which one coordinate can reach alone; "
                "lower he.global_scale_bits (CKKS) or raise he.clip (packed Paillier, plaintext)"
            )
        if (
            self.central_dp.accountant == "prv"
            and self.central_dp.distributed
            and self.he.noise_distribution(distributed=True) is Distribution.SKELLAM
        ):
            raise ValueError(
                "central_dp.accountant 'prv' with central_dp.distributed under he.kind 'paillier': the noise "
                "shares are Skellam on the fixed-point lattice, which prv (Gaussian rounds only) cannot "
                "account; use accountant 'rdp', or he.kind 'ckks' for Gaussian shares"
            )
        # The strategy states its own constraints; imported here because `protocol.strategies` is built on
        # this module's models.
        from protocol.strategies import strategy_class

        rule = strategy_class(self.strategy)
        name = self.strategy.value
        if not rule.allows_central_noise and self.central_dp.noisy:
            raise ValueError(
                f"strategy {name!r} aggregates with a robust decomposition, not a clipped sum, so central_dp's "
                "noise would not bound one hospital's influence: set central_dp.noise_multiplier to 0"
            )
        if self.late_uploads is not None and self.central_dp.distributed:
            raise ValueError(
                "late_uploads with central_dp.distributed: the cloud decrypts each late bucket on its own, and "
                "a bucket holds only its few clients' noise shares, less than the noise the plan promises; "
                "turn off central_dp.distributed (the cloud then adds the noise) or late_uploads"
            )
        if self.late_uploads is not None and not rule.allows_late_uploads:
            raise ValueError(
                f"late_uploads with strategy {name!r}: the robust decomposition works on each region's sum "
                "of one round, and a late bucket is neither; set late_uploads to null"
            )
        rebase = self.rank_policy.rebase_rank
        if rebase is not None and rebase > self.r_max:
            raise ValueError(f"rank_policy.rebase_rank must be at most r_max={self.r_max}, got {rebase}")
        if rebase is not None and self.convergence is None:
            raise ValueError("rank_policy.rebase_rank re-bases at convergence: set `convergence` too")
        if rebase is not None and not rule.can_rebase:
            able = " or ".join(repr(kind.value) for kind in Strategy if strategy_class(kind).can_rebase)
            raise ValueError(
                f"rank_policy.rebase_rank needs strategy {able} (a frozen, shared A to re-base), got {name!r}"
            )
        if rule.requires_plaintext and self.he.kind is not HEKind.NONE:
            raise ValueError(
                f"strategy {name!r} needs per-client plaintext updates, so he.kind must be 'none', got "
                f"{self.he.kind.value!r}"
            )
        masking = isinstance(self.he, PaillierParams) and self.he.masking
        if masking and self.late_uploads is not None:
            raise ValueError(
                "late_uploads with he.masking: a late upload arrives after its round's masking cohort closed, "
                "and alone it could only be unmasked alone; set late_uploads to null or he.masking to false"
            )
        if (
            isinstance(self.he, PaillierParams)
            and masking
            and self.he.max_clients < self.min_clients_per_edge
        ):
            raise ValueError(
                f"he.max_clients={self.he.max_clients} is below min_clients_per_edge="
                f"{self.min_clients_per_edge}: no cohort could be summed"
            )
        return self

    def _check_compression(self) -> None:
        """What `compression` needs of the rest of the spec; the bits themselves depend on the adapter's
        size, which the cloud checks when it creates the federation (`protocol.compression`)."""
        compression = self.compression
        if compression is None:
            return
        if not isinstance(self.he, PaillierParams):
            raise ValueError(
                f"compression quantises packed Paillier slots, got he.kind {self.he.kind.value!r}; set he.kind "
                "'paillier' or compression to null"
            )
        dp = self.central_dp
        if not dp.noisy or dp.mechanism is not NoiseMechanism.GAUSSIAN:
            raise ValueError(
                f"compression sizes the rounding against Gaussian central noise, got central_dp.mechanism "
                f"{dp.mechanism.value!r} with noise_multiplier {dp.noise_multiplier}; set a noise multiplier "
                "and mechanism 'gaussian', or compression to null"
            )
        if compression.bits == "given" and self.he.rounding != "stochastic":
            raise ValueError(
                f"compression with bits 'given' needs he.rounding 'stochastic' (its tolerances are for "
                f"randomised rounding), got {self.he.rounding!r}"
            )

    @property
    def deadline_margin_s(self) -> float:
        """Seconds between a round's upload deadline (the edges close) and its round deadline (the cloud
        closes): at least `forward_budget_s + max_clock_skew_s`."""
        return self.round_deadline_s - self.upload_deadline_s

    def protection(self) -> list[str]:
        """What this federation's encryption does not protect against, one sentence each (empty: uploads are
        masked below the encryption, so no edge, and no edge with the cloud, reads one hospital's update)."""
        if self.he.kind is HEKind.NONE:
            return [
                "he.kind 'none': every edge and the cloud read each hospital's update in the clear; use it "
                "only where every party may"
            ]
        if isinstance(self.he, PaillierParams) and self.he.masking:
            return []
        notes = [
            "uploads are not masked: an edge colluding with the cloud can decrypt one hospital's upload, and "
            "a malicious edge can forward one hospital's ciphertext as a sum (he.kind 'paillier' with "
            "he.masking true closes both)"
        ]
        if self.he.kind is HEKind.CKKS:
            notes.append(
                "CKKS: ciphertexts cannot be checked to be honest encryptions, and a decryption of a crafted "
                "one that the cloud publishes reveals its secret key to the edge that crafted it "
                "(docs/security.md); trust every edge, or use he.kind 'paillier' with he.masking true"
            )
        return notes


class NoiseShare(BaseModel):
    """One client's share of a round's distributed noise (Kairouz et al. 2021, distributed DP).

    `gaussian` (CKKS): add the discrete Gaussian of sigma `std / step` times `step` (`HEParams.noise_step`,
    `protocol.samplers`) to every coordinate of the weighted, clipped delta. `skellam`
    (packed Paillier): add `step * (Poisson(lam) - Poisson(lam))` with `lam = (std / step)^2 / 2`, where
    `step` is the Paillier quantisation step, so the shares stay on the integer lattice and their sum is
    Skellam again (Agarwal et al. 2021). `clients` shares make the round's target std `z C`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mechanism: Literal[Distribution.GAUSSIAN, Distribution.SKELLAM]
    std: float = Field(gt=0.0, le=MAX_SHARE_STD, description="per coordinate, in the units of the delta")
    clients: int = Field(ge=1, le=MAX_CLIENTS_PER_ROUND, description="shares sized for this many clients")
    noise_multiplier: float = Field(gt=0.0, description="the round's z")


class RoundPlan(Message):
    """What the cloud asks of clients in one round.

    The cloud stores the whole round's plan (`client_edges` set) and shows it to the admin only; an edge, and
    each of its hospitals, gets that edge's view (`view`): `edge_id` set, `client_ranks` naming only the
    edge's hospitals, every round-wide field kept. A view is signed on its own, `edge_id` included, so a view
    for one edge verifies nowhere else; it is the plan its edge and hospitals bind their uploads and sums to
    (`sha256`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_examples.ROUND_PLAN]})

    federation_id: Identifier
    round: int = Field(ge=0)
    adapter_version: int = Field(ge=0, description="the global adapter clients start from")
    basis_version: int = Field(ge=0)
    deadline: datetime
    client_ranks: dict[Identifier, Annotated[int, Field(ge=1, le=MAX_R)]] = Field(
        max_length=MAX_CLIENTS_PER_ROUND
    )
    clip_norm: float = Field(gt=0.0, description="clients clip their padded delta to this L2 norm")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    local_dp: LocalDPConfig = Field(default_factory=LocalDPConfig)
    layout_digest: Sha256Hex | None = Field(default=None, description="AdapterLayout.digest of the update")
    clip_norm_ord: Literal[1, 2] = Field(default=2, description="2: L2 clip (Gaussian); 1: L1 clip (Laplace)")
    weighting: Weighting = Weighting.UNIFORM
    weight_cap: int = Field(default=1000, ge=1, le=MAX_WEIGHT_CAP)
    noise_share: NoiseShare | None = Field(
        default=None, description="distributed DP: the noise each client adds before encrypting"
    )
    validation_fraction: float | None = Field(
        default=None, gt=0.0, le=0.5, description="hold out this share of the data and report its loss"
    )
    vector_sha256: Sha256Hex | None = Field(
        default=None,
        description="SHA-256 of the global adapter's bytes the round starts from (what "
        "GET /federations/{fid}/adapters/{adapter_version}/vector serves)",
    )
    basis_sha256: Sha256Hex | None = Field(
        default=None,
        description="SHA-256 of the frozen basis the round trains on (`protocol.ffa.basis_sha256`: the bytes "
        "GET /federations/{fid}/basis/{basis_version} serves)",
    )
    published_rank: int | None = Field(
        default=None,
        ge=0,
        le=MAX_R,
        description="the k-th largest of client_ranks (k = min_clients_per_edge): only LoRA columns of B "
        "(rows of A) below it can be published, since fewer than k hospitals reach the others; the round "
        "holds back any more that fewer than k of the hospitals that do upload reach (`RoundStatus`)",
    )
    edge_id: Identifier | None = Field(
        default=None,
        description="the edge whose view of the round this is: `client_ranks` names its hospitals only "
        "(what an edge and its hospitals are served); absent in the whole round's plan (the admin's)",
    )
    client_edges: dict[Identifier, Identifier] | None = Field(
        default=None,
        max_length=MAX_CLIENTS_PER_ROUND,
        description="the edge each hospital of `client_ranks` uploads through this round: in the whole "
        "round's plan only, never in an edge's view",
    )
    signature: Signature = Field(
        default=b"", description="the cloud's Ed25519 signature of `signing_payload()` (FederationInfo's key)"
    )

    @model_validator(mode="after")
    def _a_view_names_one_edge(self) -> RoundPlan:
        if self.edge_id is not None and self.client_edges is not None:
            raise ValueError(
                f"client_edges is set in edge {self.edge_id!r}'s view: a view names no other edge"
            )
        if self.client_edges is not None and self.client_edges.keys() != self.client_ranks.keys():
            unplaced = sorted(self.client_ranks.keys() ^ self.client_edges.keys())
            raise ValueError(f"client_edges and client_ranks name different hospitals: {unplaced[:5]}")
        return self

    def view(self, edge_id: str) -> RoundPlan:
        """Edge `edge_id`'s view of this whole-round plan, unsigned: its hospitals only (none if it has none
        in the round), with every other field as planned. Raises `PlanViewError` on a plan that is a view
        already or that does not say where its hospitals are."""
        if self.edge_id is not None or self.client_edges is None:
            raise PlanViewError(
                f"round {self.round}'s plan has edge_id = {self.edge_id!r} and "
                f"{'no' if self.client_edges is None else 'a'} client_edges: only the whole round's plan, "
                "which places every hospital, has views",
                field="client_edges" if self.client_edges is None else "edge_id",
            )
        ranks = {
            cid: rank for cid, rank in self.client_ranks.items() if self.client_edges.get(cid) == edge_id
        }
        return self.model_copy(
            update={"edge_id": edge_id, "client_ranks": ranks, "client_edges": None, "signature": b""}
        )

    def check_view_for(self, edge_id: str) -> None:
        """Raise `PlanViewError` unless this plan is edge `edge_id`'s view: a view served to another edge
        (or the whole round's plan) must not be followed here, whoever signed it."""
        if self.edge_id != edge_id:
            raise PlanViewError(
                f"round {self.round}'s plan is the view of edge {self.edge_id!r}, not of {edge_id!r}",
                field="edge_id",
            )

    def signing_payload(self) -> bytes:
        """The bytes the cloud signs: the plan's tag (`protocol.signing.PLAN`), then every field but the
        signature, as canonical JSON. Fields left None are not in it, so a field added later leaves the
        digest of a plan that does not use it unchanged."""
        fields = self.model_dump(mode="json", exclude={"signature"}, exclude_none=True)
        return signing.tagged(signing.PLAN, _canonical(fields))

    @property
    def sha256(self) -> str:
        """The plan's digest: hospitals put it in their uploads, edges in their aggregates, and whoever holds
        another plan for the round refuses them (`plan_mismatch`)."""
        return _sha256(self.signing_payload())

    def weight_for(self, num_examples: int) -> float:
        """The weight a client applies to its clipped delta: at most 1, so the sensitivity stays `C`."""
        if self.weighting is Weighting.CAPPED_EXAMPLES:
            return max(1, min(num_examples, self.weight_cap)) / self.weight_cap
        return 1.0


class PlanViewError(ValueError):
    """A round plan that is not the view asked for (`RoundPlan.view`, `RoundPlan.check_view_for`)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


MAX_PRIVACY_HISTORY = 10_000
#: Steps of one history entry: a billion DP-SGD steps is far beyond any hospital's training.
MAX_HISTORY_STEPS = 10**9


#: One release: (noise_multiplier, sample_rate, steps), each bounded in the schema as in the validator.
HistoryEntry = tuple[
    Annotated[float, Field(gt=0.0, le=MAX_NOISE_MULTIPLIER)],
    Annotated[float, Field(gt=0.0, le=1.0)],
    Annotated[int, Field(ge=0, le=MAX_HISTORY_STEPS)],
]

#: A hospital's example count is released once, as `n + N(0, COUNT_NOISE_STD^2)` (sensitivity 1), before it
#: enrols; both its histories start with this entry (`client_agent.releases`).
COUNT_NOISE_STD = 10.0
COUNT_ENTRY: tuple[float, float, int] = (COUNT_NOISE_STD, 1.0, 1)


class LocalSpend(BaseModel):
    """A hospital's example-level accounting so far: its accountant histories and the epsilon they give.

    Adjacency: one example added to or removed from the hospital's data. Each example is either in the
    training part (`history`: the public count's release, then DP-SGD) or held out (`held_out_history`: the
    public count's release, then each round's noisy held-out loss); the hospital's epsilon is the larger of
    the two (parallel composition). The cloud's ledger recomputes it from the histories with its own
    accountant rather than trusting `epsilon`; both are shown.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epsilon: float = Field(
        ge=0.0, le=MAX_EPSILON, description="the hospital's own accountant, at `delta` (at most MAX_EPSILON)"
    )
    delta: float = Field(gt=0.0, lt=1.0)
    accountant: Literal["rdp", "prv"] = "rdp"
    history: tuple[HistoryEntry, ...] = Field(
        max_length=MAX_PRIVACY_HISTORY,
        description="(noise_multiplier, sample_rate, steps) of every release on the training part",
    )
    budget: float | None = Field(default=None, gt=0.0, le=MAX_EPSILON, description="the hospital's own limit")
    held_out_history: tuple[HistoryEntry, ...] = Field(
        default=(),
        max_length=MAX_PRIVACY_HISTORY,
        description="(noise_multiplier, sample_rate, steps) of every release on the held-out part",
    )


class ClientUpdate(Message):
    """One hospital's encrypted, padded, clipped (and pre-weighted) delta for one round."""

    model_config = ConfigDict(json_schema_extra={"examples": [_examples.CLIENT_UPDATE]})

    federation_id: Identifier
    round: int = Field(ge=0)
    basis_version: int = Field(ge=0)
    client_id: Identifier
    rank: int = Field(ge=1, le=MAX_R)
    weight: float = Field(
        ge=MIN_WEIGHT,
        le=MAX_WEIGHT,
        description="already applied by the client before encrypting (`RoundPlan.weight_for`); in "
        "[MIN_WEIGHT, MAX_WEIGHT] = [1e-6, 1e6]",
    )
    num_examples: int = Field(ge=0, le=MAX_EXAMPLES, description="at most MAX_EXAMPLES = 10**9")
    nonce: Nonce
    ciphertext: Ciphertext
    local_epsilon: float | None = Field(
        default=None, ge=0.0, le=MAX_EPSILON, description="example-level epsilon spent so far"
    )
    local_privacy: LocalSpend | None = None
    noise_share_std: float | None = Field(
        default=None,
        ge=0.0,
        le=MAX_SHARE_STD,
        description="std of the distributed-noise share the client added; at most MAX_SHARE_STD = 1e6",
    )
    validation_loss: float | None = Field(
        default=None, ge=0.0, le=1e6, description="loss of the round's starting adapter on held-out data"
    )
    validation_examples: int | None = Field(
        default=None, ge=1, le=MAX_EXAMPLES, description="held-out examples; at most MAX_EXAMPLES = 10**9"
    )
    signature: Signature = b""
    plan_sha256: Sha256Hex | None = Field(
        default=None, description="`RoundPlan.sha256` of the plan the client trained under (signed)"
    )
    contribution_signature: Signature = Field(
        default=b"",
        description="the client's Ed25519 signature of its manifest line (`Contribution.signing_payload`), "
        "which the edge forwards in its manifest and the cloud verifies",
    )

    def signing_payload(self, *, ciphertext_sha256: str | None = None) -> bytes:
        """The bytes a client signs: the upload's tag (`protocol.signing.UPLOAD`), then every field but the
        signatures, the ciphertext by its digest (which covers its envelope's key fingerprint too).
        `ciphertext_sha256`: `self.ciphertext_sha256` when the caller computed it already (it reads every
        byte of the ciphertext)."""
        fields = self.model_dump(mode="json", exclude={"signature", "ciphertext", "contribution_signature"})
        fields["ciphertext_sha256"] = ciphertext_sha256 or _sha256(self.ciphertext)
        if fields["plan_sha256"] is None:  # absent when unset
            del fields["plan_sha256"]
        return signing.tagged(signing.UPLOAD, _canonical(fields))

    @property
    def ciphertext_sha256(self) -> str:
        return _sha256(self.ciphertext)

    def manifest_line(self, *, ciphertext_sha256: str | None = None) -> Contribution:
        """The line an edge's manifest carries for this upload: who, with which weight and rank, not what;
        signed with `contribution_signature`. `ciphertext_sha256` as for `signing_payload`."""
        return Contribution(
            client_id=self.client_id,
            weight=self.weight,
            num_examples=self.num_examples,
            rank=self.rank,
            nonce=self.nonce,
            ciphertext_sha256=ciphertext_sha256 or self.ciphertext_sha256,
            local_epsilon=self.local_epsilon,
            local_privacy=self.local_privacy,
            noise_share_std=self.noise_share_std,
            validation_loss=self.validation_loss,
            validation_examples=self.validation_examples,
            signature=self.contribution_signature,
        )

    def signed(self, sign: Callable[[bytes], bytes]) -> ClientUpdate:
        """This update signed by its client (`sign`: its Ed25519 key's): first its manifest line, for the
        cloud, then the whole upload, for the edge."""
        line = self.manifest_line().signing_payload(federation_id=self.federation_id, round_=self.round)
        with_line = self.model_copy(update={"contribution_signature": sign(line)})
        return with_line.model_copy(update={"signature": sign(with_line.signing_payload())})


class Contribution(BaseModel):
    """One line of an edge's manifest: who is inside a sum, without what they sent, signed by that client."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, ser_json_bytes="base64", val_json_bytes="base64"
    )

    client_id: Identifier
    weight: float = Field(ge=MIN_WEIGHT, le=MAX_WEIGHT, description="the upload's weight, in [1e-6, 1e6]")
    num_examples: int = Field(ge=0)
    rank: int = Field(ge=1, le=MAX_R)
    nonce: Nonce
    ciphertext_sha256: Sha256Hex
    local_epsilon: float | None = Field(default=None, ge=0.0, le=MAX_EPSILON)
    local_privacy: LocalSpend | None = None
    noise_share_std: float | None = Field(default=None, ge=0.0)
    validation_loss: float | None = Field(default=None, ge=0.0, le=1e6)
    validation_examples: int | None = Field(default=None, ge=1)
    signature: Signature = Field(
        default=b"",
        description="the client's Ed25519 signature of `signing_payload()` for the round its update was made "
        "for: an edge cannot name a client that did not upload to it",
    )

    def signing_payload(self, *, federation_id: str, round_: int) -> bytes:
        """The bytes the client signs: the line's tag (`protocol.signing.CONTRIBUTION`), then every field of
        the line but the signature (fields left None are not in it), with the federation and the round it
        trained for (the origin round of a late upload), so a line cannot be moved to another federation or
        round."""
        fields = self.model_dump(mode="json", exclude={"signature"}, exclude_none=True)
        context = {"federation_id": federation_id, "round": round_, "protocol_version": PROTOCOL_VERSION}
        return signing.tagged(signing.CONTRIBUTION, _canonical({**fields, **context}))


class LateSum(BaseModel):
    """A bucket of late uploads inside an `EdgeAggregate`: the sum of at least `k` uploads made for
    `origin_round`, which had closed at the edge before they arrived (`FederationSpec.late_uploads`)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, ser_json_bytes="base64", val_json_bytes="base64"
    )

    origin_round: int = Field(ge=0)
    ciphertext: Ciphertext
    contributions: tuple[Contribution, ...] = Field(min_length=1, max_length=MAX_CLIENTS_PER_ROUND)
    plan_sha256: Sha256Hex | None = Field(
        default=None, description="`RoundPlan.sha256` of the origin round's plan, as the edge holds it"
    )

    @property
    def count(self) -> int:
        return len(self.contributions)

    @property
    def total_weight(self) -> float:
        return float(sum(c.weight for c in self.contributions))


class EdgeAggregate(Message):
    """An edge's homomorphic sum for a round plus the manifest of who contributed."""

    model_config = ConfigDict(json_schema_extra={"examples": [_examples.EDGE_AGGREGATE]})

    federation_id: Identifier
    round: int = Field(ge=0)
    basis_version: int = Field(ge=0)
    edge_id: Identifier
    ciphertext: Ciphertext
    contributions: tuple[Contribution, ...] = Field(min_length=1, max_length=MAX_CLIENTS_PER_ROUND)
    idempotency_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9:_.-]{8,128}$")]
    signature: Signature = b""
    late: tuple[LateSum, ...] = Field(
        default=(), max_length=100, description="buckets of late uploads, one per origin round, oldest first"
    )
    plan_sha256: Sha256Hex | None = Field(
        default=None, description="`RoundPlan.sha256` of the round's plan, as the edge holds it (signed)"
    )
    mask_correction: Ciphertext | None = Field(
        default=None,
        description="masking federations: the ring residues that remove the cohort's masks from the "
        "decrypted sum (`protocol.secagg.residue_bytes`); absent otherwise",
    )

    @model_validator(mode="after")
    def _distinct_clients(self) -> EdgeAggregate:
        ids = [c.client_id for c in self.contributions]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"contributions name clients more than once: {dupes}")
        origins = [bucket.origin_round for bucket in self.late]
        if len(set(origins)) != len(origins):
            raise ValueError(f"late buckets name an origin round more than once: {origins}")
        for bucket in self.late:
            if bucket.origin_round >= self.round:
                raise ValueError(
                    f"a late bucket's origin_round must be before round {self.round}, got {bucket.origin_round}"
                )
            late_ids = [c.client_id for c in bucket.contributions]
            if len(set(late_ids)) != len(late_ids):
                raise ValueError(f"late bucket of round {bucket.origin_round} names a client more than once")
        return self

    @property
    def count(self) -> int:
        return len(self.contributions)

    @property
    def total_weight(self) -> float:
        return float(sum(c.weight for c in self.contributions))

    def signing_payload(self) -> bytes:
        """The bytes the edge signs: the aggregate's tag (`protocol.signing.AGGREGATE`), then its fields,
        each ciphertext by its digest."""
        fields = self.model_dump(mode="json", exclude={"signature", "ciphertext", "late", "mask_correction"})
        fields["ciphertext_sha256"] = _sha256(self.ciphertext)
        if self.mask_correction is not None:  # absent when unset, so older signatures still verify
            fields["mask_correction_sha256"] = _sha256(self.mask_correction)
        if fields["plan_sha256"] is None:  # absent when unset, like `late`
            del fields["plan_sha256"]
        if self.late:  # absent when empty, so aggregates signed before late buckets existed still verify
            fields["late"] = [
                {
                    **bucket.model_dump(
                        mode="json",
                        exclude={"ciphertext"} | ({"plan_sha256"} if bucket.plan_sha256 is None else set()),
                    ),
                    "ciphertext_sha256": _sha256(bucket.ciphertext),
                }
                for bucket in self.late
            ]
        return signing.tagged(signing.AGGREGATE, _canonical(fields))

    @property
    def signed_sha256(self) -> str:
        """The digest of what the edge signed (`signing_payload`): the whole aggregate but its signature, so
        two aggregates with the same one are the same sum, manifest and every ciphertext included."""
        return _sha256(self.signing_payload())


class EdgeProgress(BaseModel):
    """One edge's part in a round: counts only, never client ids (the cloud's view in `RoundStatus.edges`,
    the edge's own at its `GET /federations/{fid}/rounds/{n}`)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        json_schema_extra={"examples": [_examples.EDGE_PROGRESS]},
    )

    edge_id: Identifier
    expected_clients: int = Field(ge=0)
    uploads_accepted: int = Field(ge=0)
    uploads_refused: int = Field(default=0, ge=0)
    forwarded: bool = False
    bytes_received: int = Field(default=0, ge=0)
    late_accepted: int = Field(default=0, ge=0, description="late uploads for earlier rounds, in buckets")
    forwarded_at: datetime | None = Field(
        default=None,
        description="when the cloud accepted this edge's aggregate for the round (in the cloud's status); at "
        "the edge's own endpoint, when the edge sent the aggregate the cloud accepted (by the edge's clock)",
    )
    uploads_dropped: dict[DropReason, int] = Field(
        default_factory=dict,
        description="at the edge's own endpoint: uploads made for this round that the edge acknowledged and "
        "that will reach no model, by reason",
    )
    carried_into_round: int | None = Field(
        default=None,
        ge=0,
        description="at the edge's own endpoint: the later round this round's sum joined as a late bucket "
        "after the cloud refused it as closed",
    )


class RebaseSummary(BaseModel):
    """Seed 001's third stage, as a round's status reports it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    basis_version: int = Field(ge=0, description="the new basis, served at GET /federations/{fid}/basis/{v}")
    adapter_version: int = Field(ge=0, description="the adapter in the new basis")
    rank: int = Field(ge=1, le=MAX_R)
    truncation_error: float = Field(
        ge=0.0, description="Frobenius norm of what the common rank drops: sqrt of the discarded sigma^2"
    )
    kept_energy: float = Field(ge=0.0, le=1.0, description="share of sum sigma^2 the common rank keeps")


COLUMN_NOISE_STD = (
    "per LoRA column j of B (row j of A), the standard deviation of the client-level noise on it in the "
    "published adapter: the noise on the sum over the column's divisor, the total weight or, with "
    "normalize_rank_columns, the weight of the hospitals whose rank reaches column j; 0 for a column held "
    "back. Column 0's is the head's too"
)


class RoundStatus(Message):
    """What admins see of a round."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [_examples.ROUND_STATUS_CLOSED, _examples.ROUND_STATUS_COLLECTING]}
    )

    federation_id: Identifier
    round: int = Field(ge=0)
    state: RoundState
    opened_at: datetime
    closed_at: datetime | None = None
    adapter_version_in: int = Field(ge=0)
    adapter_version_out: int | None = Field(default=None, ge=0)
    edges: tuple[EdgeProgress, ...] = ()
    clients_contributed: int = Field(default=0, ge=0)
    total_weight: float = Field(default=0.0, ge=0.0)
    update_norm: float | None = Field(default=None, ge=0.0)
    metrics: dict[str, float] = Field(default_factory=dict, max_length=256)
    flagged: tuple[Identifier, ...] = ()
    late_contributions: int = Field(
        default=0, ge=0, description="uploads made for earlier rounds and folded into this one"
    )
    uploads_dropped: dict[DropReason, int] = Field(
        default_factory=dict,
        description="uploads in the aggregates the cloud accepted for this round that reached no model, by "
        "reason (what edges dropped is in each edge's own round status)",
    )
    rebased: RebaseSummary | None = Field(
        default=None, description="set when this round re-based the adapter"
    )
    published_rank: int | None = Field(
        default=None,
        ge=0,
        le=MAX_R,
        description="set when the round closes: LoRA columns of B (rows of A) from this index on were "
        "published unchanged from the previous adapter (held back), because fewer than min_clients_per_edge "
        "of the round's hospitals (late buckets included) reach them; r_max: nothing held back",
    )
    column_noise_std: tuple[float, ...] | None = Field(
        default=None,
        max_length=MAX_R,
        description=COLUMN_NOISE_STD + "; set when the round closes with client-level noise (metrics "
        "noise_std is the largest over the published adapter)",
    )
    failure: str | None = Field(default=None, max_length=2000)
    stop_reason: str | None = Field(
        default=None, max_length=2000, description="why the federation ended with this round"
    )
    close_attempts: int = Field(
        default=0,
        ge=0,
        description="failed attempts to close the round so far (crypto errors aside); it is retried with "
        "back-off and failed after CloudSettings.close_max_attempts",
    )
    close_error: str | None = Field(
        default=None, max_length=2000, description="the last failed close attempt's error"
    )
    duration_s: float | None = Field(
        default=None,
        ge=0.0,
        description="closed_at - opened_at in seconds, set when the round closes or fails",
    )


class ClientRoundPrivacy(BaseModel):
    """A hospital's example-level spend as of one round it contributed to."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    round: int = Field(ge=0)
    local_epsilon: float | None = Field(
        default=None, ge=0.0, description="the ledger's, over all steps so far"
    )
    reported_epsilon: float | None = Field(default=None, ge=0.0, description="the hospital's own accountant")
    noise_multiplier: float | None = Field(default=None, ge=0.0, description="DP-SGD sigma of that round")
    sample_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    steps: int | None = Field(default=None, ge=0, description="DP-SGD steps run so far")
    history: tuple[tuple[float, float, int], ...] = Field(
        default=(), description="the training part's (noise_multiplier, sample_rate, steps) releases"
    )
    held_out_history: tuple[tuple[float, float, int], ...] = Field(
        default=(), description="the held-out part's releases"
    )


class ClientPrivacy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    client_id: Identifier
    local_epsilon: float | None = Field(default=None, ge=0.0, description="example-level, at `delta`")
    local_budget: float | None = Field(default=None, gt=0.0)
    rounds: tuple[ClientRoundPrivacy, ...] = ()
    reported_epsilon: float | None = Field(default=None, ge=0.0)
    local_delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    history_regressed: bool = Field(
        default=False,
        description="a later round's history did not extend an earlier one's (a state folder lost or restored "
        "from a backup, a stale manifest line); local_epsilon composes both",
    )


class CentralRoundPrivacy(BaseModel):
    """The client-level noise one closed round released, and the federation's epsilon after it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    round: int = Field(ge=0)
    mechanism: NoiseMechanism
    noise_multiplier: float = Field(ge=0.0, description="the schedule's z for this round")
    clip_norm: float = Field(gt=0.0)
    epsilon_after: float | None = Field(default=None, ge=0.0)
    realised_noise_multiplier: float | None = Field(
        default=None,
        ge=0.0,
        description="noise std (Laplace: scale) on the released sum over C times sensitivity, dropouts and "
        "top-up included: the multiplier the epsilon is computed from",
    )
    decryptor_noise_multiplier: float | None = Field(
        default=None,
        ge=0.0,
        description="the same for what the cloud saw when it decrypted, all arrived shares (distributed noise "
        "only)",
    )
    clients: int = Field(default=0, ge=0)
    total_weight: float = Field(default=0.0, ge=0.0)
    sensitivity: float = Field(
        default=1.0,
        ge=1.0,
        description="clip norms one hospital could move the released sum by: one upload with what its "
        "encoding adds (encoding_slack), more when a hospital's late upload was released with its fresh one; "
        "the epsilon is that of noise_multiplier / sensitivity",
    )
    distributed: bool = False
    shares_planned: int | None = Field(default=None, ge=0)
    top_up_std: float | None = Field(default=None, ge=0.0, description="noise the cloud added for dropouts")
    encoding_slack: float | None = Field(
        default=None,
        ge=0.0,
        description="clip norms the encryption's encoding can add to one upload (packed Paillier's rounding), "
        "included in sensitivity",
    )
    shares_arrived: int | None = Field(
        default=None, ge=0, description="distributed noise: the hospitals' shares inside the decrypted sum"
    )
    share_std: float | None = Field(
        default=None, ge=0.0, description="distributed noise: the largest std any of those shares declared"
    )
    smallest_sum_shares: int | None = Field(
        default=None,
        ge=0,
        description="distributed noise: the shares inside the smallest edge aggregate, which the cloud could "
        "decrypt on its own (what the column against it counts)",
    )
    released: bool = Field(
        default=True,
        description="false: the round failed with edge sums in the cloud's hands; nothing was published, but "
        "the column against the decrypting cloud counts what it holds",
    )
    decryptor_epsilon_after: float | None = Field(
        default=None,
        ge=0.0,
        description="the epsilon against the decrypting cloud (and colluding_clients hospitals) after this "
        "round; None when it is unbounded (see PrivacyReport.decryptor_unbounded)",
    )
    column_noise_std: tuple[float, ...] | None = Field(
        default=None,
        max_length=MAX_R,
        description=COLUMN_NOISE_STD + " (None in entries written before it was recorded). Dividing by a "
        "public weight is post-processing: on every column the noise over what one hospital can move it by "
        "is at least realised_noise_multiplier, the multiplier the epsilon is computed from",
    )
    noise_distribution: Distribution | None = Field(
        default=None,
        description="what the accountant counts the released noise as: the mechanism's own distribution, or "
        "skellam for distributed shares under packed Paillier (Agarwal, Kairouz, Liu 2021), whose noise and "
        "sensitivities it counts in lattice steps; None without noise",
    )
    lattice_step: float | None = Field(
        default=None,
        gt=0.0,
        description="skellam: the lattice's step in the deltas' units; noise std / lattice_step is the noise "
        "in steps, sensitivity * clip_norm / lattice_step one hospital's L2 reach in steps",
    )
    coordinates: int | None = Field(
        default=None,
        ge=1,
        description="skellam: coordinates of one upload; an integer vector's L1 norm is at most "
        "sqrt(coordinates) times its L2 norm (and at most its square), which bounds the L1 reach",
    )


class PrivacyReport(Message):
    """The privacy ledger: example-level epsilon per client and client-level epsilon of the federation."""

    model_config = ConfigDict(json_schema_extra={"examples": [_examples.PRIVACY_REPORT]})

    federation_id: Identifier
    delta: float = Field(gt=0.0, lt=1.0)
    central_epsilon: float | None = Field(
        default=None, ge=0.0, description="client-level, over rounds so far"
    )
    central_budget: float | None = Field(default=None, gt=0.0)
    central_rounds: tuple[CentralRoundPrivacy, ...] = ()
    clients: tuple[ClientPrivacy, ...] = ()
    accountant: Literal["rdp", "prv"] = "rdp"
    state: FederationState | None = None
    reason: str | None = Field(default=None, max_length=2000)
    next_round_epsilon: float | None = Field(
        default=None, ge=0.0, description="central epsilon if the next planned round runs"
    )
    planned_epsilon: float | None = Field(
        default=None, ge=0.0, description="central epsilon after every planned round"
    )
    local_accountant: Literal["rdp", "prv"] = "rdp"
    decryptor_epsilon: float | None = Field(
        default=None,
        ge=0.0,
        description="client-level, against the cloud that decrypts the sums (and colluding_clients hospitals): "
        "only the noise shares it did not add or know count; None when unbounded or before any round",
    )
    decryptor_unbounded: bool = Field(
        default=False,
        description="against the decrypting cloud there is no client-level guarantee: it added the noise itself "
        "(no distributed noise), or in some round every share that arrived was known to the colluders",
    )
    decryptor_next_round_epsilon: float | None = Field(
        default=None, ge=0.0, description="decryptor epsilon if the next round runs as planned (every share)"
    )
    colluding_clients: int = Field(default=0, ge=0, description="hospitals assumed to collude with the cloud")
    budget_against: BudgetAgainst = Field(default="public", description="which epsilon the budget caps")


class ErrorBody(Message):
    """The one error body every service returns with a 4xx or 5xx."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [_examples.ERROR_WRONG_ROUND, _examples.ERROR_INVALID_REQUEST]}
    )

    code: ErrorCode
    message: str = Field(max_length=4000)
    field: str | None = Field(default=None, max_length=256)
    detail: dict[str, Any] | None = None


# -- enrolment and federation info ---------------------------------------------------------------------
PublicKey = Annotated[
    bytes,
    Base64(min_bytes=32, max_bytes=32, description="Ed25519 raw public key (a point of prime order)"),
    AfterValidator(check_public_key),
]
#: The tag every enrolment proof's signed payload starts with: a signature over one can never be taken
#: for a signature over any other message of the protocol, nor of another version of this one.
ENROLMENT_SIGNING_TAG = b"fedlora-enrol-v1"
#: How long an enrolment challenge's nonce may be answered (`EnrolmentChallenge`).
ENROLMENT_CHALLENGE_TTL_S = 120
MAX_ENROLMENT_TOKEN_TTL_S = 90 * 24 * 3600
# Printable ASCII, spelled out: `\s` differs between regex dialects (Python's takes U+0085 as a space,
# ECMAScript's does not), so a document using it meant one thing to the cloud and another to its clients.
Url = Annotated[str, Field(pattern=r"^https?://[!-~]{1,2000}$")]


class Role(StrEnum):
    ADMIN = "admin"
    EDGE = "edge"
    CLIENT = "client"


class Signer(Protocol):
    def sign(self, payload: bytes) -> bytes: ...


class FederationCreated(Message):
    """Returned once when a federation is created (enrolment tokens are issued per party afterwards)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_examples.FEDERATION_CREATED]})

    federation_id: Identifier
    he_fingerprint: Sha256Hex


PartyRole = Literal[Role.EDGE, Role.CLIENT]


class EnrolmentTokenRequest(Message):
    """An admin's request for a single-use enrolment token bound to one edge or hospital id."""

    model_config = ConfigDict(json_schema_extra={"examples": [_examples.ENROLMENT_TOKEN_REQUEST]})

    role: PartyRole
    subject: Identifier = Field(description="the one edge or hospital id the token may enrol")
    ttl_s: int = Field(default=7 * 24 * 3600, ge=60, le=MAX_ENROLMENT_TOKEN_TTL_S)


class EnrolmentTokenState(StrEnum):
    ISSUED = "issued"
    USED = "used"
    EXPIRED = "expired"


class EnrolmentTokenInfo(Message):
    """An issued enrolment token as the cloud keeps it: its digest (`token_id`), never the token."""

    model_config = ConfigDict(json_schema_extra={"examples": [_examples.ENROLMENT_TOKEN_INFO]})

    token_id: Sha256Hex = Field(description="the SHA-256 of the token: how it is listed and revoked")
    role: PartyRole
    subject: Identifier
    issued_at: datetime
    expires_at: datetime
    state: EnrolmentTokenState = EnrolmentTokenState.ISSUED
    used_at: datetime | None = None


class EnrolmentTokenIssued(Message):
    """A new enrolment token, returned once: hand it to the party it names, out of band."""

    model_config = ConfigDict(json_schema_extra={"examples": [_examples.ENROLMENT_TOKEN_ISSUED]})

    federation_id: Identifier
    token_id: Sha256Hex
    role: PartyRole
    subject: Identifier
    enrolment_token: str = Field(min_length=16, max_length=256)
    issued_at: datetime
    expires_at: datetime


class EnrolmentChallenge(Message):
    """A single-use nonce an enrolling party signs with the key it enrols (`EdgeEnrolment.signing_payload`,
    `ClientEnrolment.signing_payload`): proof that it holds the private half."""

    model_config = ConfigDict(json_schema_extra={"examples": [_examples.ENROLMENT_CHALLENGE]})

    federation_id: Identifier
    nonce: Nonce
    expires_at: datetime


def enrolment_payload(federation_id: str, role: Role, fields: dict[str, Any]) -> bytes:
    """What an enrolment proof signs: the tag, then the federation, the role and the enrolment's fields
    (its id, key, edge and URL, nonce) as canonical JSON, so that a proof for one federation, role, id,
    key or nonce is no proof for another."""
    body = {"federation_id": federation_id, "role": role.value, **fields}
    return ENROLMENT_SIGNING_TAG + b"\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class FederationInfo(Message):
    model_config = ConfigDict(json_schema_extra={"examples": [_examples.FEDERATION_INFO]})

    spec: FederationSpec
    state: FederationState
    created_at: datetime
    he_fingerprint: Sha256Hex
    layout_size: int = Field(ge=1)
    layout_digest: Sha256Hex
    current_round: int | None = Field(default=None, ge=0)
    adapter_version: int = Field(default=0, ge=0)
    reason: str | None = Field(default=None, max_length=2000)
    plan_public_key: PublicKey | None = Field(
        default=None, description="the Ed25519 key every `RoundPlan` of this federation is signed with"
    )


class _SignedEnrolment(Message):
    """An enrolment with its proof of possession: `signature` is the enrolled key's signature of
    `signing_payload` over a nonce the cloud issued (`EnrolmentChallenge`). The cloud refuses one without."""

    role: ClassVar[Role]
    public_key: PublicKey
    nonce: Nonce | None = Field(default=None, description="an `EnrolmentChallenge` nonce, used once")
    signature: Signature | None = Field(
        default=None, description="the enrolled key's Ed25519 signature of the enrolment's signing payload"
    )

    def signing_payload(self, federation_id: str) -> bytes:
        fields = self.model_dump(mode="json", exclude={"signature", "protocol_version"})
        return enrolment_payload(federation_id, self.role, fields)

    def signed(self, key: Signer, *, federation_id: str, nonce: str) -> Self:
        """This enrolment answering `nonce`, signed with `key` (the private half of `public_key`)."""
        with_nonce = self.model_copy(update={"nonce": nonce, "signature": None})
        return with_nonce.model_copy(
            update={"signature": key.sign(with_nonce.signing_payload(federation_id))}
        )


class EdgeEnrolment(_SignedEnrolment):
    model_config = ConfigDict(json_schema_extra={"examples": [_examples.EDGE_ENROLMENT]})
    role: ClassVar[Role] = Role.EDGE

    edge_id: Identifier
    url: Url


class ClientEnrolment(_SignedEnrolment):
    model_config = ConfigDict(json_schema_extra={"examples": [_examples.CLIENT_ENROLMENT]})
    role: ClassVar[Role] = Role.CLIENT

    client_id: Identifier
    edge_id: Identifier
    num_examples: int = Field(ge=1, le=10**9)
    max_rank: int | None = Field(default=None, ge=1, le=MAX_R)


class EdgeUrl(Message):
    """An admin's new URL for an enrolled edge."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"url": _examples.EDGE_URL}]})

    url: Url


class Enrolled(Message):
    """Returned once at enrolment: the bearer token for later requests (the cloud keeps only its digest)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_examples.ENROLLED]})

    federation_id: Identifier
    subject: Identifier
    role: Role
    api_token: str = Field(min_length=16, max_length=256)
    edge_url: Url | None = None
    moving_after_round: int | None = Field(
        default=None,
        ge=0,
        description="a hospital's move to `edge_url` waits for this open round to end: it is in that round "
        "through its previous edge only, and uploads to `edge_url` from the next round on",
    )


#: Headers of the cloud's answer to a plan poll: its time (ISO 8601, UTC) when the poll arrived and when it
#: answered, from which an edge measures the offset of its clock to the cloud's (`services.clock`).
CLOUD_RECEIVED_AT_HEADER = "X-Cloud-Received-At"
CLOUD_ANSWERED_AT_HEADER = "X-Cloud-Answered-At"


class EdgeClock(Message):
    """An edge's clock as it last reported it on a plan poll: how far the cloud's time is ahead of the
    edge's (`offset_s`, negative when the edge runs ahead), and whether that is more than half the
    federation's deadline margin (`round_deadline_s - upload_deadline_s`), the skew it can absorb."""

    offset_s: float
    reported_at: datetime = Field(description="the cloud's time when the edge reported it")
    alert: bool = Field(description="|offset_s| exceeds half the deadline margin")


class EdgeInfo(Message):
    model_config = ConfigDict(json_schema_extra={"examples": [_examples.EDGE_INFO]})

    edge_id: Identifier
    url: Url
    public_key: PublicKey
    enrolled_at: datetime
    clock: EdgeClock | None = Field(default=None, description="its last reported clock offset (admin view)")


class EdgeStint(BaseModel):
    """An edge a hospital had before its current one: it was `edge_id`'s in each round after the stint
    before this one, up to and including `through_round`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    edge_id: Identifier
    through_round: int = Field(ge=0)


class ClientInfo(Message):
    model_config = ConfigDict(json_schema_extra={"examples": [_examples.CLIENT_INFO]})

    client_id: Identifier
    edge_id: Identifier
    public_key: PublicKey
    num_examples: int = Field(ge=1)
    rank: int = Field(ge=1, le=MAX_R)
    enrolled_at: datetime
    last_seen: datetime | None = None
    local_epsilon: float | None = Field(default=None, ge=0.0)
    rounds_contributed: int = Field(default=0, ge=0)
    max_rank: int | None = Field(default=None, ge=1, le=MAX_R, description="the client's own cap")
    moving_to: Identifier | None = Field(
        default=None,
        description="a move to this edge asked for while round `moving_after_round` was open: the hospital "
        "contributes to that round through `edge_id`, and is this edge's from the next round on",
    )
    moving_after_round: int | None = Field(default=None, ge=0)
    edges_before: list[EdgeStint] = Field(
        default_factory=list,
        max_length=MAX_STALENESS + 1,
        description="the edges it had before `edge_id`, oldest first, kept back to the oldest round a sum "
        "or late bucket may still be for (`late_uploads.max_staleness` rounds before the current one)",
    )

    @model_validator(mode="after")
    def _a_move_names_its_round(self) -> ClientInfo:
        if (self.moving_to is None) != (self.moving_after_round is None):
            raise ValueError(
                f"moving_to ({self.moving_to!r}) and moving_after_round ({self.moving_after_round!r}) are set "
                "together or not at all"
            )
        ends = [stint.through_round for stint in self.edges_before]
        if self.moving_after_round is not None:
            ends.append(self.moving_after_round)
        if any(later <= earlier for earlier, later in itertools.pairwise(ends)):
            raise ValueError(
                f"edges_before and moving_after_round end in rounds {ends}: each stint ends after the one "
                "before it"
            )
        return self

    def stints(self) -> list[EdgeStint]:
        """Every edge this record knows the hospital had before its last one, the pending move's included:
        the last edge is `moving_to` if a move is pending, else `edge_id`."""
        if self.moving_to is None or self.moving_after_round is None:
            return list(self.edges_before)
        return [*self.edges_before, EdgeStint(edge_id=self.edge_id, through_round=self.moving_after_round)]

    def at_round(self, round_: int) -> ClientInfo:
        """This record as of round `round_`: at the edge it had in that round, with the move that ended its
        stint there as `moving_to` and the stints before in `edges_before`. A pending move is done once the
        round it waited for is over. Read from the stored record: the view of a round before a move does
        not know the edges after the next one."""
        stints = self.stints()
        last = self.moving_to or self.edge_id
        for index, stint in enumerate(stints):
            if round_ <= stint.through_round:
                following = stints[index + 1].edge_id if index + 1 < len(stints) else last
                return self.model_copy(
                    update={
                        "edge_id": stint.edge_id,
                        "moving_to": following,
                        "moving_after_round": stint.through_round,
                        "edges_before": stints[:index],
                    }
                )
        return self.model_copy(
            update={"edge_id": last, "moving_to": None, "moving_after_round": None, "edges_before": stints}
        )


class IdentityKeys(Message):
    """The enrolled Ed25519 identity keys of one edge's hospitals: what a hospital checks its masking
    cohort's adverts and survivor lists against (the cloud's registry is the cohort's PKI)."""

    edge_id: Identifier
    keys: dict[Identifier, PublicKey] = Field(max_length=MAX_CLIENTS_PER_ROUND)


MAX_EVALUATION_METRICS = 32
MetricName = Annotated[
    str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$", description="lower-case snake case, e.g. `accuracy`")
]
# Strict: a boolean is not a number (the schema says a number).
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]
# Metrics that are fractions: a value outside [0, 1] is a caller's mistake (a percentage, a count).
FRACTION_METRICS = frozenset(
    {"accuracy", "balanced_accuracy", "f1", "macro_f1", "precision", "recall", "auroc"}
)


class AdapterEvaluation(Message):
    """How one global adapter version did on a held-out set (`PUT .../adapters/{version}/evaluation`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_examples.ADAPTER_EVALUATION]})

    metrics: dict[MetricName, FiniteFloat] = Field(
        min_length=1,
        max_length=MAX_EVALUATION_METRICS,
        description="e.g. {accuracy: 0.81, loss: 0.43}",
        # The schema states the fractions' range that `_fractions_in_unit_interval` checks.
        json_schema_extra={
            "properties": {
                name: {"type": "number", "minimum": 0.0, "maximum": 1.0} for name in sorted(FRACTION_METRICS)
            }
        },
    )
    examples: int = Field(ge=1, le=10**9, description="held-out examples evaluated")
    dataset: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.:/+-]{0,127}$",
        description="which held-out set, e.g. `rt_sentiment:test`",
    )
    evaluated_at: datetime | None = Field(default=None, description="set by the cloud when it stores it")

    @field_validator("evaluated_at", mode="before")
    @classmethod
    def _time_as_text(cls, value: Any) -> Any:
        # Pydantic takes a number for seconds since the epoch; the schema says a date-time string.
        if isinstance(value, int | float):
            raise ValueError(f"must be an ISO 8601 date-time string, got the number {value!r}")
        return value

    @field_validator("metrics")
    @classmethod
    def _fractions_in_unit_interval(cls, metrics: dict[str, float]) -> dict[str, float]:
        for name, value in metrics.items():
            if name in FRACTION_METRICS and not 0.0 <= value <= 1.0:
                raise ValueError(f"metric `{name}` is a fraction and must lie in [0, 1], got {value}")
        return metrics


class AdapterVersion(Message):
    """One version of the global adapter, as `GET /federations/{fid}/adapters` lists it."""

    model_config = ConfigDict(json_schema_extra={"examples": [_examples.ADAPTER_VERSION]})

    federation_id: Identifier
    version: int = Field(ge=0)
    round: int | None = Field(
        default=None, ge=0, description="the round that produced it; None for version 0"
    )
    update_norm: float | None = Field(default=None, ge=0.0, description="L2 norm of the change it applied")
    created_at: datetime
    basis_version: int | None = Field(
        default=None,
        ge=0,
        description="the basis its A comes from (GET /federations/{fid}/basis/{v}); None only in a record "
        "stored before every version recorded it, which the listing resolves",
    )
    evaluation: AdapterEvaluation | None = Field(
        default=None, description="the latest held-out evaluation recorded for this version"
    )


class UploadAccepted(BaseModel):
    """An edge's answer to an accepted `ClientUpdate` (202): it is in the round's sum, with `count` in all."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        json_schema_extra={"examples": [_examples.UPLOAD_ACCEPTED, _examples.UPLOAD_ACCEPTED_LATE]},
    )

    accepted: Literal[True] = True
    count: int = Field(ge=1, description="contributions in this round's sum at the edge, this one included")
    folded_into_round: int | None = Field(
        default=None,
        ge=0,
        description="set for a late upload: the round whose aggregate carries it (`count` is then its "
        "bucket's); it still needs min_clients_per_edge late uploads of its round to be used",
    )
