"""A hospital's own privacy policy: what it refuses to train under, whatever the cloud's spec or plans ask.

The threat model (DESIGN.md) has a curious cloud and edges that may be malicious, so the hospital does not
take its privacy from them. Tried as a curious cloud would: a plan with batch size 1 and one step hands
back one training note's embedding in the update; a crafted head served to one hospital tells the cloud,
through the validation loss it reports, how many of its held-out notes sit close to a chosen sentence. So a
hospital checks every spec and plan against limits set in its own settings (`ClientSettings`), checks
every plan's signature and the bytes it downloads against the plan's digests, and signs the plan's digest
into its upload, where its edge compares it with the other hospitals' (`plan_mismatch`).

A refusal names the field, the value and the limit. A spec that fails stops the agent
(`SpecRefusedError`); a plan that fails skips its round (`PlanRefusedError`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel, ConfigDict

from client_agent.errors import InsecurePeerError, PlanRefusedError, PolicyRefusalError, SpecRefusedError
from protocol.crypto.params import HEKind
from protocol.messages import FederationSpec, LocalDPConfig, PlanViewError, RoundPlan, TrainingConfig
from services.identity import IdentityError, verify
from services.settings import ClientSettings
from services.tls import is_loopback


class HospitalPolicy(BaseModel):
    """The limits (their defaults and meaning: `ClientSettings`) and what they refuse."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    local_epsilon_budget: float
    min_batch_size: int
    max_rank: int
    min_clients_per_edge: int
    max_global_norm: float
    allow_plaintext: bool = False
    allow_unmasked: bool = False
    allow_without_local_dp: bool = False
    allow_insecure_http: bool = False

    @classmethod
    def from_settings(cls, settings: ClientSettings) -> HospitalPolicy:
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})

    def warnings(self) -> list[str]:
        """One line per unsafe option this hospital opted into, for its log at start."""
        lines = []
        if self.allow_plaintext:
            lines.append(
                "UNSAFE: FEDLORA_ALLOW_PLAINTEXT is on: this hospital joins federations without encryption, "
                "where its edge and the cloud read its update"
            )
        if self.allow_unmasked:
            lines.append(
                "UNSAFE: FEDLORA_ALLOW_UNMASKED is on: this hospital joins federations whose uploads are not "
                "masked below the encryption, where an edge colluding with the cloud can decrypt its update"
            )
        if self.allow_without_local_dp:
            lines.append(
                "UNSAFE: FEDLORA_ALLOW_WITHOUT_LOCAL_DP is on: this hospital trains without DP-SGD when the "
                "federation turns it off"
            )
        if self.allow_insecure_http:
            lines.append(
                "UNSAFE: FEDLORA_ALLOW_INSECURE_HTTP is on: tokens and updates cross the network unencrypted"
            )
        return lines

    # -- the federation ------------------------------------------------------------------------------
    def check_spec(self, spec: FederationSpec, *, num_examples: int) -> None:
        """Raise `SpecRefusedError` unless this hospital may join `spec` with `num_examples` examples."""
        check_finite(spec, where="the spec", error=SpecRefusedError)
        if spec.he.kind is HEKind.NONE and not self.allow_plaintext:
            raise SpecRefusedError(
                "he.kind = 'none': the federation does not encrypt updates, so the edge and the cloud would "
                "read this hospital's; set FEDLORA_ALLOW_PLAINTEXT=true to join anyway",
                field="he.kind",
                value="none",
                limit="ckks or paillier",
            )
        if spec.he.kind is not HEKind.NONE and spec.protection() and not self.allow_unmasked:
            raise SpecRefusedError(
                f"he.kind = '{spec.he.kind.value}' without masking: an edge colluding with the cloud could "
                "decrypt this hospital's upload (docs/security.md). Masked federations are he.kind "
                "'paillier' with he.masking true; FEDLORA_ALLOW_UNMASKED=true opts this hospital in anyway",
                field="he.masking",
                value=False,
                limit=True,
            )
        if spec.min_clients_per_edge < self.min_clients_per_edge:
            raise SpecRefusedError(
                f"min_clients_per_edge = {spec.min_clients_per_edge} is below this hospital's floor "
                f"{self.min_clients_per_edge}: an edge could forward a sum of fewer hospitals, down to this "
                "one's update alone",
                field="min_clients_per_edge",
                value=spec.min_clients_per_edge,
                limit=self.min_clients_per_edge,
            )
        self._check_training(
            spec.local_dp, spec.training, num_examples=num_examples, where="the spec", error=SpecRefusedError
        )

    # -- one round -----------------------------------------------------------------------------------
    def check_plan(self, plan: RoundPlan, *, client_id: str, num_examples: int) -> None:
        """Raise `PlanRefusedError` unless this hospital may train round `plan.round` as planned."""
        where = f"round {plan.round}'s plan"
        check_finite(plan, where=where, error=PlanRefusedError)
        rank = plan.client_ranks.get(client_id)
        if rank is not None and rank > self.max_rank:
            raise PlanRefusedError(
                f"{where}: client_ranks.{client_id} = {rank} is above this hospital's max_rank {self.max_rank}",
                field=f"client_ranks.{client_id}",
                value=rank,
                limit=self.max_rank,
            )
        self._check_training(
            plan.local_dp, plan.training, num_examples=num_examples, where=where, error=PlanRefusedError
        )

    def check_vector(self, vector: np.ndarray, *, plan: RoundPlan) -> None:
        """Raise `PlanRefusedError` unless the global adapter a round starts from is finite and within
        `max_global_norm`: a crafted head must not reach this hospital's held-out loss."""
        where = f"round {plan.round}'s adapter version {plan.adapter_version}"
        finite = np.isfinite(vector)
        if not finite.all():
            bad = int(vector.size - finite.sum())
            raise PlanRefusedError(
                f"{where} has {bad} non-finite values", field="vector", value=f"{bad} non-finite", limit="0"
            )
        norm = float(np.linalg.norm(vector.astype(np.float64)))
        if norm > self.max_global_norm:
            raise PlanRefusedError(
                f"{where} has L2 norm {norm:.6g}, above this hospital's max_global_norm {self.max_global_norm:g}",
                field="vector",
                value=norm,
                limit=self.max_global_norm,
            )

    def _check_training(
        self,
        dp: LocalDPConfig,
        training: TrainingConfig,
        *,
        num_examples: int,
        where: str,
        error: type[PolicyRefusalError],
    ) -> None:
        if not dp.enabled:
            if self.allow_without_local_dp:
                return
            raise error(
                f"{where}: local_dp.enabled = False turns DP-SGD off; this hospital trains only with it (set "
                "FEDLORA_ALLOW_WITHOUT_LOCAL_DP=true to train without)",
                field="local_dp.enabled",
                value=False,
                limit=True,
            )
        if dp.epsilon > self.local_epsilon_budget:
            raise error(
                f"{where}: local_dp.epsilon = {dp.epsilon:g} is above this hospital's local_epsilon_budget "
                f"{self.local_epsilon_budget:g}",
                field="local_dp.epsilon",
                value=dp.epsilon,
                limit=self.local_epsilon_budget,
            )
        # delta is the chance the guarantee fails outright; above 1/n it may as well fail for one of the n.
        limit = 1.0 / max(num_examples, 1)
        if dp.delta > limit:
            raise error(
                f"{where}: local_dp.delta = {dp.delta:g} is above 1/n = {limit:.6g} (this hospital trains on "
                f"{num_examples} examples)",
                field="local_dp.delta",
                value=dp.delta,
                limit=limit,
            )
        batch = min(training.batch_size, num_examples)
        if batch < self.min_batch_size:
            held = (
                f" (this hospital holds only {num_examples} examples)"
                if num_examples < self.min_batch_size
                else ""
            )
            raise error(
                f"{where}: training.batch_size = {training.batch_size} gives batches of {batch}{held}, below "
                f"this hospital's min_batch_size {self.min_batch_size}",
                field="training.batch_size",
                value=batch,
                limit=self.min_batch_size,
            )

    # -- peers ---------------------------------------------------------------------------------------
    def check_peer_url(self, url: str | None, *, field: str) -> str:
        """`url` if this hospital may talk to it: https, or http to this machine (loopback) only."""
        if not url:
            raise SpecRefusedError(f"{field} is not set", field=field, value=url, limit="an https URL")
        parts = urlsplit(url)
        if parts.scheme == "https" or (
            parts.scheme == "http" and (is_loopback(parts.hostname) or self.allow_insecure_http)
        ):
            return url
        raise InsecurePeerError(
            f"{field} = {url!r} is not https and not on this machine: the API token and the updates would "
            "cross the network in the clear (terminate TLS in front of the peer, or set "
            "FEDLORA_ALLOW_INSECURE_HTTP=true)",
            field=field,
            value=url,
            limit="https, or http to a loopback host",
        )


def check_finite(
    model: BaseModel, *, where: str, error: type[PlanRefusedError] | type[SpecRefusedError]
) -> None:
    """Raise `error` naming the first float field of `model` (dotted, nested models and lists included) that
    is NaN or infinite (an infinite clip norm clips nothing); the models refuse them when parsed, and this
    check holds for a model built without validation."""
    for field, value in _floats(model.model_dump(mode="python"), ""):
        if not math.isfinite(value):
            raise error(f"{where}: {field} = {value} is not finite", field=field, value=value, limit="finite")


def _floats(value: object, path: str) -> Iterator[tuple[str, float]]:
    if isinstance(value, float):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _floats(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _floats(item, f"{path}[{i}]")


def verify_plan(plan: RoundPlan, public_key: bytes, *, edge_id: str) -> None:
    """Raise `PlanRefusedError` unless `plan` carries the federation's signature and is the view of this
    hospital's edge `edge_id`: another edge's view (signed too) holds another digest than its edge's, so an
    upload under it would be refused there."""
    try:
        plan.check_view_for(edge_id)
    except PlanViewError as e:
        raise PlanRefusedError(str(e), field=e.field, value=plan.edge_id, limit=edge_id) from e
    if not plan.signature:
        raise PlanRefusedError(
            f"round {plan.round}'s plan is not signed", field="signature", value=None, limit="the plan key's"
        )
    try:
        verify(public_key, plan.signing_payload(), plan.signature)
    except IdentityError as e:
        raise PlanRefusedError(
            f"round {plan.round}'s plan is not signed with the federation's plan key: {e}",
            field="signature",
            value=plan.signature.hex()[:16] + "...",
            limit=public_key.hex(),
        ) from e


def check_digest(plan: RoundPlan, *, field: str, actual: str) -> None:
    """Raise `PlanRefusedError` unless the plan's `field` (a SHA-256) is `actual`, the digest of what was
    downloaded or computed for it."""
    expected = getattr(plan, field)
    if expected is None:
        raise PlanRefusedError(
            f"round {plan.round}'s plan carries no {field}, so what it starts from cannot be checked",
            field=field,
            value=None,
            limit=actual,
        )
    if expected != actual:
        raise PlanRefusedError(
            f"round {plan.round}'s plan says {field} = {expected}, what this hospital got has {actual}",
            field=field,
            value=expected,
            limit=actual,
        )
