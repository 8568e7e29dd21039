"""The hospital's agent: enrol, wait for a plan, train, clip, encrypt, sign, upload, repeat.

Everything it must not forget lives in its state folder, so a restarted agent (or one whose cloud or edge
restarted) carries on: the Ed25519 key, the API token, the last round it uploaded, its DP accountant
history, and what it pinned at first contact (its edge's URL, the federation's HE key and plan key). Every
network call retries with backoff; an upload the edge already holds (`duplicate_upload` after a lost answer)
counts as done.

It trusts nobody with its privacy (`client_agent.policy`): a spec its own policy refuses, or a peer other
than the ones it pinned, stops it; a plan its policy refuses, that the federation did not sign, or whose
adapter or basis is not the one the plan names, skips that round.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import secrets
import ssl
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from client_agent.data import Dataset, Share, hospital_share, load_file
from client_agent.deid import Deidentifier, make_finder
from client_agent.device import resolve_device
from client_agent.errors import (
    AgentError,
    InsecurePeerError,
    LocalBudgetExhaustedError,
    PinMismatchError,
    PlanRefusedError,
    SpecRefusedError,
)
from client_agent.masking import COHORT_GRACE_S, CohortSession
from client_agent.model import default_model_path
from client_agent.policy import HospitalPolicy, check_digest, verify_plan
from client_agent.releases import (
    BUDGET_ROUNDING,
    COUNT_ENTRY,
    PublicCounts,
    appended,
    calibrate,
    epsilon_of,
    held_out_mask,
    new_split_key,
    noisy_count,
    release_loss,
    validation_entry,
)
from client_agent.tasks import TaskKind, task_for
from client_agent.train import (
    BudgetExhaustedError,
    DPSettings,
    LocalConfig,
    LocalResult,
    PrivacyHistory,
    check_budget,
)
from client_agent.update import contribution, seal
from protocol.crypto import CryptoError, HEScheme, scheme_from_public
from protocol.ffa import (
    AdapterLayout,
    LayoutError,
    basis_from_bytes,
    basis_sha256,
    seeded_bases,
    vector_from_wire,
)
from protocol.messages import (
    ClientEnrolment,
    ClientUpdate,
    ErrorCode,
    FederationInfo,
    FederationSpec,
    IdentityKeys,
    LocalSpend,
    RoundPlan,
    TaskType,
    UploadAccepted,
)
from protocol.reach import planned_hold
from protocol.samplers import LatticeSampler
from protocol.secagg import SecAggError
from protocol.strategies import strategy_for
from protocol.upload_frame import UPLOAD_FRAME_MEDIA_TYPE, encode_upload
from services.clock import OffsetClock, cloud_sample
from services.enrolling import enrol
from services.http import Peer, PeerRefusedError
from services.identity import SigningKey
from services.metrics import ClientMetrics
from services.secret_files import write_secret
from services.settings import ClientSettings
from services.tls import TLSSettingsError, client_context

log = logging.getLogger("client_agent")

FINISHED = (ErrorCode.FEDERATION_NOT_ACTIVE.value,)
ALREADY_HELD = (ErrorCode.DUPLICATE_UPLOAD.value, ErrorCode.REPLAY.value)
TOO_LATE = (ErrorCode.ROUND_CLOSED.value, ErrorCode.WRONG_ROUND.value)


__all__ = ["AgentError", "AgentState", "ClientAgent", "LocalBudgetExhaustedError", "held_out_split"]


@dataclass
class AgentState:
    """What survives a restart, as JSON in the state folder."""

    api_token: str | None = None
    edge_url: str | None = None
    last_round: int | None = None
    #: Accountant history of the training part (the public count's release, then DP-SGD rounds).
    privacy: list[tuple[float, float, int]] | None = None
    # The HE key fingerprint of the federation this state belongs to, pinned at first contact: a federation
    # created again under the same id is another federation, and this state's privacy history is not its.
    federation_fingerprint: str | None = None
    # The federation's plan-signing key (hex), pinned at first contact unless the settings name it.
    plan_public_key: str | None = None
    #: The example count as released once with noise (`client_agent.releases`); never drawn again.
    public_examples: int | None = None
    #: Hex key of the per-example held-out split (drawn from the operating system, never sent).
    split_key: str | None = None
    #: Accountant history of the held-out part (the public count's release, then noisy held-out losses).
    held_out_privacy: list[tuple[float, float, int]] | None = None
    #: The held-out fraction of the first plan accepted (None: no split); every later plan must keep it.
    validation_fraction: float | None = None
    split_pinned: bool = False

    @classmethod
    def load(cls, path: Path) -> AgentState:
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        for key in ("privacy", "held_out_privacy"):
            if raw.get(key) is not None:
                raw[key] = [tuple(entry) for entry in raw[key]]
        return cls(**raw)

    def save(self, path: Path) -> None:
        """Atomically, with mode 0600 from creation: the state holds the hospital's API token."""
        write_secret(path, json.dumps(self.__dict__))


def held_out_split(dataset: Dataset, fraction: float | None, key: bytes) -> tuple[Dataset, Dataset | None]:
    """(train, held out): each example held out on its own by a keyed hash (`releases.held_out_mask`), the
    same every round; or no split."""
    if fraction is None:
        return dataset, None
    mask = held_out_mask(dataset.texts, dataset.labels, fraction=fraction, key=key)
    if mask.all() or not mask.any():
        raise AgentError(
            f"validation_fraction {fraction} of {len(dataset)} examples leaves an empty train or held-out part"
        )
    return dataset.subset(np.flatnonzero(~mask)), dataset.subset(np.flatnonzero(mask))


def load_hospital_data(settings: ClientSettings) -> Dataset:
    """The hospital's data: its file (labels as written, mapped to the federation's classes by
    `labelled_for`) or its share of a bundled task (whose classes the task fixes)."""
    if settings.data_file is not None:
        return load_file(settings.data_file)
    if settings.task is None or settings.partition is None:
        raise AgentError("set FEDLORA_DATA_FILE, or FEDLORA_TASK with FEDLORA_PARTITION (e.g. 'mild:1/4')")
    return hospital_share(
        settings.task, Share.parse(settings.partition), max_train_examples=settings.max_train_examples
    )


def deidentified_hospital_data(settings: ClientSettings) -> tuple[Dataset, Counter[str]]:
    """The hospital's data with its PHI replaced by the finder `settings.deid_engine` names (Presidio with
    our rules unless it says "rules"), and how many spans of each type went."""
    dataset = load_hospital_data(settings)
    texts, counts = Deidentifier(finder=make_finder(settings.deid_engine)).deidentify_many(dataset.texts)
    return dataclasses.replace(dataset, texts=list(texts)), counts


def labelled_for(dataset: Dataset, spec: FederationSpec) -> Dataset:
    """`dataset` with its labels mapped to the federation's classes by name (`spec.label_names`, or
    `0 .. num_labels - 1`). The mapping depends on each record alone: a file's own class list (the distinct
    labels its rows hold) would change every other record's label when one record is added or removed.
    Raises `AgentError` counting the labels the federation does not have (never naming them: a label read
    from the hospital's file is its data)."""
    names = spec.label_names or tuple(str(i) for i in range(spec.num_labels))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({dataset.label_names[label] for label in dataset.labels} - set(index))
    if unknown:
        raise AgentError(
            f"the data holds {len(unknown)} labels that federation {spec.federation_id!r} does not have; its "
            f"classes are {list(names)[:10]} (spec.label_names, or 0 .. num_labels - 1)"
        )
    labels = [index[dataset.label_names[label]] for label in dataset.labels]
    return Dataset(dataset.texts, labels, tuple(names), dataset.name, dataset.meta)


@dataclass
class _Session:
    """What one run of the agent carries from round to round."""

    spec: FederationSpec
    scheme: HEScheme
    cloud: Peer
    edge: Peer
    data: Dataset
    released: int  # the public, noisy example count
    model: Any = None  # the task's model (`client_agent.tasks`): an FFAClassifier or an FFACausalLM
    features: Any = None
    validation: Any = None
    basis_digest: str | None = None  # of the basis installed in `model`; None: its seeded one


class ClientAgent:
    def __init__(
        self,
        settings: ClientSettings,
        *,
        model_path: Path | None = None,
        metrics: ClientMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ClientMetrics()  # served only when `settings.metrics_port` is set
        self.state_dir = settings.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.state_dir / "state.json"
        self.state = AgentState.load(self.state_path)
        key_path = self.state_dir / "signing-key.bin"
        if key_path.exists() and not self.state_path.exists():
            # The key says this hospital has taken part; without its state it would draw its count again
            # and start its privacy histories from zero, on data that has already spent budget.
            raise AgentError(
                f"{self.state_dir} holds this hospital's key but not its state.json: its privacy history is "
                "lost. Restore state.json from a backup; a fresh state folder is a new hospital (new key, new "
                "client id) for a federation whose budget this data has not spent"
            )
        self.key = SigningKey.load_or_create(key_path)
        if not self.state_path.exists():
            self.state.save(self.state_path)
        self.model_path = model_path or settings.model_path or default_model_path()
        self.device = resolve_device(settings.device)  # DeviceError names FEDLORA_DEVICE and its value
        self.fid = settings.federation_id
        self.policy = HospitalPolicy.from_settings(settings)
        # Deadlines come from the cloud: checked in its time, measured on every plan poll.
        self.cloud_time = OffsetClock()

    # -- setup -------------------------------------------------------------------------------------------
    async def enrol(self, cloud: Peer, num_examples: int) -> None:
        """Enrol with this hospital's key, once (`num_examples`: its true count; the cloud gets the public,
        noisy one)."""
        if self.state.api_token is not None:
            cloud.set_token(self.state.api_token)
            return
        body = ClientEnrolment(
            client_id=self.settings.client_id,
            edge_id=self.settings.edge_id,
            public_key=self.key.public_bytes,
            num_examples=self.public_count(num_examples),  # the cloud learns the noisy count only
            max_rank=self.settings.max_rank,
        )
        token = self.settings.enrolment_token
        enrolled = await enrol(
            cloud, self.fid, body, self.key, enrolment_token=token.get_secret_value() if token else None
        )
        edge_url = self.policy.check_peer_url(enrolled.edge_url, field="edge_url")
        pinned = self.settings.edge_url or self.state.edge_url
        if pinned is not None and pinned != edge_url:
            raise PinMismatchError(
                f"the cloud now sends this hospital to edge_url {edge_url!r}, not {pinned!r} that it enrolled "
                "with: an upload there could reach an edge of the cloud's choosing; if the region really moved "
                "its edge, remove edge_url from the state folder's state.json",
                field="edge_url",
                value=edge_url,
                limit=pinned,
            )
        self.state.api_token, self.state.edge_url = enrolled.api_token, edge_url
        if enrolled.moving_after_round is not None:
            # The cloud counts this hospital at its previous edge until that round is over: sit it out here
            # (what it uploaded there before the move is counted there).
            last = self.state.last_round
            self.state.last_round = max(enrolled.moving_after_round, -1 if last is None else last)
            log.info(
                "moving to this edge after the open round",
                extra={"round": enrolled.moving_after_round, "data": {"edge": self.settings.edge_id}},
            )
        self.state.save(self.state_path)
        cloud.set_token(enrolled.api_token)
        log.info(
            "enrolled", extra={"client_id": self.settings.client_id, "data": {"edge": self.settings.edge_id}}
        )

    async def federation(self, cloud: Peer, num_examples: int) -> tuple[FederationSpec, HEScheme]:
        """The federation's spec and public key, once the spec passes this hospital's policy. A saved API token
        the cloud no longer knows (revoked by a re-enrolment elsewhere, a cloud restored from an older backup)
        is replaced by enrolling again with the same key. The HE key and the plan key are pinned at first
        contact unless the settings name them (`he_fingerprint`, `plan_public_key`): a federation that presents others later (a state folder from another federation under this
        id, a public context that is not the federation's) is refused."""
        try:
            raw = (await cloud.request("GET", f"/federations/{self.fid}")).content
        except PeerRefusedError as e:
            if e.status != 401 or self.state.api_token is None:
                raise
            log.warning("the cloud refused the saved API token; enrolling again with the same key")
            self.state.api_token = None
            await self.enrol(cloud, num_examples)
            raw = (await cloud.request("GET", f"/federations/{self.fid}")).content
        info = FederationInfo.model_validate_json(raw)
        held = self.state.federation_fingerprint
        given = self.settings.he_fingerprint
        if given is not None and given != info.he_fingerprint:
            raise PinMismatchError(
                f"federation {self.fid!r} presents HE key {info.he_fingerprint[:12]}..., not the "
                f"{given[:12]}... this hospital was given (FEDLORA_HE_FINGERPRINT): its key was swapped, and "
                "this hospital encrypts under no other key",
                field="he_fingerprint",
                value=info.he_fingerprint,
                limit=given,
            )
        if held is not None and held != info.he_fingerprint:
            raise PinMismatchError(
                f"the state folder {self.settings.state_dir} belongs to another federation named {self.fid!r} "
                f"(HE key {held[:12]}..., the cloud's is {info.he_fingerprint[:12]}...): its privacy history "
                "is not this federation's, and an update encrypted under another key is not for the "
                "federation this hospital joined; give this agent a fresh FEDLORA_STATE_DIR",
                field="he_fingerprint",
                value=info.he_fingerprint,
                limit=held,
            )
        public = (await cloud.request("GET", f"/federations/{self.fid}/public-context")).content
        scheme = scheme_from_public(info.spec.he, public)
        if scheme.fingerprint.hex() != info.he_fingerprint:
            raise PinMismatchError(
                f"the public context the cloud serves has fingerprint {scheme.fingerprint.hex()[:12]}..., not "
                f"the federation's {info.he_fingerprint[:12]}...: this hospital encrypts under no other key",
                field="public_context",
                value=scheme.fingerprint.hex(),
                limit=info.he_fingerprint,
            )
        plan_key = self._pin_plan_key(info)
        # The policy sees the public count only: its answers are visible to the cloud (a refused plan leaves
        # this hospital out of the round), so they must not depend on the exact one.
        self.policy.check_spec(info.spec, num_examples=self.public_count(num_examples))
        if held is None or self.state.plan_public_key != plan_key:
            self.state.federation_fingerprint = info.he_fingerprint
            self.state.plan_public_key = plan_key
            self.state.save(self.state_path)
        return info.spec, scheme

    def _pin_plan_key(self, info: FederationInfo) -> str:
        """The key every plan must be signed with: the settings' if they name one, else the one pinned at first
        contact; a federation that publishes another (or none) is refused."""
        published = info.plan_public_key.hex() if info.plan_public_key is not None else None
        trusted = self.settings.plan_public_key or self.state.plan_public_key
        if published is None:
            raise SpecRefusedError(
                f"federation {self.fid!r} publishes no plan-signing key, so its plans cannot be checked",
                field="plan_public_key",
                value=None,
                limit=trusted or "an Ed25519 public key",
            )
        if trusted is not None and trusted != published:
            raise PinMismatchError(
                f"federation {self.fid!r} now publishes plan key {published[:12]}..., not {trusted[:12]}... "
                "that this hospital trusts",
                field="plan_public_key",
                value=published,
                limit=trusted,
            )
        return published

    # -- one round ---------------------------------------------------------------------------------------
    async def next_plan(self, cloud: Peer) -> RoundPlan | None:
        """The next plan after the last round handled; None while there is none yet."""
        params: dict[str, float | int] = {"wait": self.settings.poll_s * 10}
        if self.state.last_round is not None:
            params["after_round"] = self.state.last_round
        sent = self.cloud_time.local()
        response = await cloud.request("GET", f"/federations/{self.fid}/plan", params=params, timeout=600.0)
        sample = cloud_sample(response.headers, sent=sent, received=self.cloud_time.local())
        if sample is not None and self.cloud_time.measured(sample):
            offset = round(self.cloud_time.offset_s or 0.0, 3)
            log.info("clock offset to the cloud measured", extra={"data": {"offset_s": offset}})
        if response.status_code == 204:
            return None
        return RoundPlan.model_validate_json(response.content)

    def check_plan(self, plan: RoundPlan, *, num_examples: int) -> None:
        """Raise `PlanRefusedError` unless the plan is signed with the federation's plan key as this hospital's
        edge's view, is for a round after the last one handled, and passes this hospital's policy (`num_examples`: the public count of the
        examples it would train on)."""
        trusted = self.settings.plan_public_key or self.state.plan_public_key
        if trusted is None:
            raise PlanRefusedError(
                "no plan key is pinned yet", field="signature", value=None, limit="the federation's plan key"
            )
        verify_plan(plan, bytes.fromhex(trusted), edge_id=self.settings.edge_id)
        last = self.state.last_round
        if last is not None and plan.round <= last:
            raise PlanRefusedError(
                f"round {plan.round} was handled already (last round {last}): a plan replayed would spend this "
                "hospital's budget twice",
                field="round",
                value=plan.round,
                limit=f"above {last}",
            )
        self.policy.check_plan(plan, client_id=self.settings.client_id, num_examples=num_examples)

    def accept_plan(
        self, plan: RoundPlan, data: Dataset, released: int
    ) -> tuple[Dataset, Dataset | None, PublicCounts]:
        """The plan's training and held-out parts and their public counts, once the plan passes `check_plan`
        on those counts. The first plan accepted pins the held-out fraction: an example must stay in the part
        it was first put in for the ledger's larger-part rule (parallel composition) to hold, so a plan with
        another fraction, or one that leaves a part empty, is refused."""
        fraction = plan.validation_fraction
        pinned = self.state.validation_fraction if self.state.split_pinned else fraction
        if fraction != pinned:
            raise PlanRefusedError(
                f"validation_fraction {fraction} differs from {pinned}, which this hospital split its data by: "
                "examples would move between its trained and held-out parts",
                field="validation_fraction",
                value=fraction,
                limit=pinned,
            )
        try:
            train, held_out = held_out_split(data, fraction, self.split_key())
        except AgentError as e:
            raise PlanRefusedError(
                str(e), field="validation_fraction", value=fraction, limit="two non-empty parts"
            ) from e
        public = PublicCounts.derive(released, fraction)
        self.check_plan(plan, num_examples=public.train)
        if not self.state.split_pinned:
            self.state.validation_fraction, self.state.split_pinned = fraction, True
            self.state.save(self.state_path)
        return train, held_out, public

    async def global_vector(self, cloud: Peer, plan: RoundPlan, size: int) -> np.ndarray:
        """The adapter the round starts from, once its bytes have the plan's digest and it is finite and
        within the policy's norm; `PlanRefusedError` otherwise."""
        version = plan.adapter_version
        raw = (await cloud.request("GET", f"/federations/{self.fid}/adapters/{version}/vector")).content
        check_digest(plan, field="vector_sha256", actual=hashlib.sha256(raw).hexdigest())
        try:
            vector = vector_from_wire(raw, size)
        except LayoutError as e:
            raise PlanRefusedError(
                f"adapter version {version}: {e}", field="vector", value=len(raw), limit=4 * size
            ) from e
        self.policy.check_vector(vector, plan=plan)
        return vector

    async def basis(
        self,
        cloud: Peer,
        plan: RoundPlan,
        spec: FederationSpec,
        *,
        layout: AdapterLayout,
        in_features: Mapping[str, int],
    ) -> tuple[dict[str, np.ndarray], str]:
        """Every module's `A_max` the plan trains on, with its digest, once that is the plan's `basis_sha256`:
        the seeded basis this hospital rebuilds from the seed itself, or a re-based one the cloud broadcasts.
        A basis the cloud does not serve, that does not fit this model or is not the plan's is refused rather
        than trained on."""
        version = plan.basis_version
        if version == spec.basis_version:
            bases = seeded_bases(layout, in_features, seed=spec.seed, basis_version=version)
            digest = basis_sha256(layout, bases)
        else:
            try:
                raw = (await cloud.request("GET", f"/federations/{self.fid}/basis/{version}")).content
                bases = basis_from_bytes(raw, layout, in_features)
            except (PeerRefusedError, LayoutError) as e:
                raise PlanRefusedError(
                    f"round {plan.round}'s plan uses basis version {version}, which this agent cannot get: {e}",
                    field="basis_version",
                    value=version,
                ) from e
            digest = hashlib.sha256(raw).hexdigest()
        check_digest(plan, field="basis_sha256", actual=digest)
        return bases, digest

    def make_update(
        self,
        plan: RoundPlan,
        scheme: HEScheme,
        delta: np.ndarray,
        *,
        num_examples: int,
        spend: LocalSpend | None,
        validation: tuple[float, int] | None = None,
        sampler: LatticeSampler | None = None,
        cohort: CohortSession | None = None,
        layout: AdapterLayout | None = None,
    ) -> ClientUpdate:
        """`delta` as the plan asks it (`client_agent.update.contribution`: clipped, weighted at most 1, this
        hospital's share of the round's noise added when the plan asks for distributed DP), encrypted and
        signed.
        `validation` is the round's starting adapter's (loss, examples) on the held-out split, when the plan
        asks for it.
        The LoRA columns from the plan's `published_rank` on are zeroed first (`protocol.reach.planned_hold`
        over `delta`'s `layout`, which a plan with a published rank requires), so the cloud never decrypts a
        column fewer than `k` planned hospitals reach."""
        if plan.published_rank is not None and layout is None:
            raise ValueError(
                f"round {plan.round}'s plan publishes rank {plan.published_rank}: make_update needs the "
                "delta's layout to zero the columns it holds back"
            )
        weight = plan.weight_for(num_examples)
        share = plan.noise_share
        values = contribution(
            scheme,
            delta,
            weight=weight,
            clip_norm=plan.clip_norm,
            clip_ord=plan.clip_norm_ord,
            share=share,
            sampler=sampler,
            held=planned_hold(layout, plan.published_rank) if layout is not None else None,
        )
        # In a masking federation the values are masked in the scheme's ring before they are encrypted.
        sealed = seal(scheme, values, encrypt=cohort.seal if cohort is not None else None)
        self.metrics.he_observed("encrypt", scheme.kind.value, sealed.encrypt_s)
        unsigned = ClientUpdate(
            federation_id=self.fid,
            round=plan.round,
            basis_version=plan.basis_version,
            client_id=self.settings.client_id,
            rank=plan.client_ranks[self.settings.client_id],
            weight=weight,
            num_examples=num_examples,
            nonce=secrets.token_hex(16),
            ciphertext=sealed.ciphertext,
            local_epsilon=spend.epsilon if spend is not None else None,
            local_privacy=spend,
            noise_share_std=share.std if share is not None else None,
            validation_loss=validation[0] if validation is not None else None,
            validation_examples=validation[1] if validation is not None else None,
            plan_sha256=plan.sha256,
        )
        return unsigned.signed(self.key.sign)

    async def upload(self, edge: Peer, update: ClientUpdate, *, deadline: datetime | None = None) -> bool:
        """True if the edge holds the update (now or from before a lost answer).

        An edge that answers `round_not_open_yet` is behind the plan this hospital holds (it is fetching
        it): the upload is sent again after `poll_s`, then twice as long each time (at most ten `poll_s`),
        until `deadline` (the plan's upload deadline, in the cloud's time), and only then given up as too late."""
        pause = self.settings.poll_s
        while True:
            try:
                return await self._upload_once(edge, update)
            except PeerRefusedError as e:
                if e.code != ErrorCode.ROUND_NOT_OPEN_YET.value:
                    raise
                left = (_aware(deadline) - self.cloud_time()).total_seconds() if deadline is not None else 0.0
                if left <= 0:
                    log.warning("upload too late", extra={"round": update.round, "code": e.code})
                    return False
                log.info(
                    "the edge has not opened the round yet; uploading again",
                    extra={"round": update.round, "code": e.code, "data": {"in_s": min(pause, left)}},
                )
                await asyncio.sleep(min(pause, left))
                pause = min(2 * pause, 10 * self.settings.poll_s)

    async def _upload_once(self, edge: Peer, update: ClientUpdate) -> bool:
        path = f"/federations/{self.fid}/rounds/{update.round}/uploads"
        # The binary frame: the ciphertext's bytes as they are, no base64 to encode here and decode there.
        body = encode_upload(update)
        try:
            response = await edge.request("POST", path, content=body, headers=_FRAME)
        except PeerRefusedError as e:
            self.metrics.sent(self.fid, len(body))  # the edge read it before it refused
            if e.code in ALREADY_HELD:
                return True
            if e.code in TOO_LATE:
                log.warning("upload too late", extra={"round": update.round, "code": e.code})
                return False
            if e.code == ErrorCode.PLAN_MISMATCH.value:
                # Hospitals of this round were served different plans (or the edge holds another): this
                # update stays out of every sum; the round is skipped like a refused plan.
                log.error(
                    "the edge holds another plan for this round than the one this hospital trained under",
                    extra={
                        "round": update.round,
                        "code": e.code,
                        "data": {"plan_sha256": update.plan_sha256},
                    },
                )
                return False
            raise
        self.metrics.sent(self.fid, len(body))
        folded = UploadAccepted.model_validate_json(response.content).folded_into_round
        if folded is not None:
            log.info(
                "upload arrived after its round closed; the edge folds it into a later round",
                extra={"round": update.round, "data": {"folded_into_round": folded}},
            )
        return True

    # -- the loop ----------------------------------------------------------------------------------------
    async def run(self, *, max_rounds: int | None = None) -> int:
        """Take part until the federation ends (or `max_rounds` uploads). Returns the uploads made. Raises
        `SpecRefusedError` (an `AgentError`) when this hospital's policy refuses the federation."""
        for line in self.policy.warnings():
            log.warning(line)
        cloud_url = self._checked_url(self.settings.cloud_url, field="cloud_url")
        clean, counts = deidentified_hospital_data(self.settings)
        log.info("data ready", extra={"data": {"examples": len(clean), "deidentified": dict(counts)}})
        cloud = Peer(cloud_url, give_up_after_s=3600.0, verify=self._tls_context())
        uploads = 0
        try:
            session = await self._join(cloud, clean)
            while max_rounds is None or uploads < max_rounds:
                try:
                    plan = await self.next_plan(cloud)
                except PeerRefusedError as e:
                    if e.code in FINISHED:
                        log.info("federation ended", extra={"data": {"reason": e.message}})
                        break
                    raise
                if plan is None:
                    continue
                try:
                    uploads += int(await self._round(session, plan))
                except PlanRefusedError as e:
                    self._refused(plan, e)
                    continue
                except LocalBudgetExhaustedError as e:
                    log.warning(
                        "stopped: local privacy budget reached",
                        extra={"round": plan.round, "data": {"why": str(e)}},
                    )
                    break
                self._done(plan.round)
        finally:
            await cloud.close()
        return uploads

    def _checked_url(self, url: str | None, *, field: str) -> str:
        """`url` if this hospital may call it (`HospitalPolicy.check_peer_url`), and, when https, with the
        federation's CA to verify the server against: a man in the middle with a certificate from any other CA
        (a public one included) cannot stand in for the cloud and swap the HE public key."""
        checked = self.policy.check_peer_url(url, field=field)
        if checked.startswith("https:") and self.settings.tls_ca_file is None:
            raise InsecurePeerError(
                f"{field} = {checked!r} is https but tls_ca_file is not set: set FEDLORA_TLS_CA_FILE to the "
                "federation's ca.crt, handed out with the enrolment token",
                field="tls_ca_file",
                value=None,
                limit="the federation's CA certificate",
            )
        return checked

    def _tls_context(self) -> ssl.SSLContext | None:
        try:
            return client_context(
                ca_file=self.settings.tls_ca_file,
                cert_file=self.settings.tls_cert_file,
                key_file=self.settings.tls_key_file,
            )
        except TLSSettingsError as e:
            raise AgentError(str(e)) from e

    async def _join(self, cloud: Peer, data: Dataset) -> _Session:
        """Enrol (releasing the noisy count), check the federation against this hospital's policy and pin
        its keys, and reach the edge: what every round then needs."""
        await self.enrol(cloud, len(data))
        spec, scheme = await self.federation(cloud, len(data))
        if self.settings.data_file is not None and spec.task_type is TaskType.SEQUENCE_CLASSIFICATION:
            data = labelled_for(data, spec)  # a causal LM's labels are its answers, whatever they are
        edge_url = self._checked_url(self.settings.edge_url or self.state.edge_url, field="edge_url")
        return _Session(
            spec=spec,
            scheme=scheme,
            cloud=cloud,
            edge=Peer(edge_url, give_up_after_s=600.0, verify=self._tls_context()),
            data=data,
            released=self.public_count(len(data)),
        )

    async def _round(self, session: _Session, plan: RoundPlan) -> bool:
        """One round as `plan` asks it: check, train, release, upload. True if the edge holds the upload.
        Raises `PlanRefusedError` (the round is skipped) or `LocalBudgetExhaustedError` (this hospital stops)."""
        rank = plan.client_ranks.get(self.settings.client_id)
        if rank is None:
            return False
        train_part, held_out, public = self.accept_plan(plan, session.data, session.released)
        cohort = None
        if session.scheme.ring_bits is not None:
            try:
                cohort = await self._cohort(session, plan)
            except (SecAggError, PeerRefusedError) as e:
                # Too late for the cohort, or a cohort this hospital must not join: it sits this round out
                # (the protocol tolerates it), its data untouched.
                log.warning(
                    "round skipped: could not join its masking cohort",
                    extra={"round": plan.round, "code": "cohort_refused", "data": {"why": str(e)}},
                )
                return False
        model = await self._model_for(session, plan, rank, train_part, held_out)
        start = await self.global_vector(session.cloud, plan, model.layout.size)
        assert session.features is not None
        started = time.perf_counter()
        # With a held-out split: the loss of the round's *starting* adapter on data never trained on,
        # released with DP before training moves the model.
        loss = (
            await asyncio.to_thread(
                self._held_out_loss, model, session.validation, start, plan, session.spec, public
            )
            if session.validation is not None
            else None
        )
        # The encryption's data-independent work (Paillier's obfuscators, over every core) runs while the
        # model trains, so that sealing the update only packs and multiplies.
        precompute = asyncio.create_task(asyncio.to_thread(session.scheme.precompute, model.layout.size))
        try:
            result = await asyncio.to_thread(
                self._train, model, session.features, start, plan, session.spec, public
            )
        finally:
            await self._precomputed(precompute, plan.round)
        # Written before the upload: a crash after it must not drop these releases from the account.
        self.state.save(self.state_path)
        self.metrics.local_training.labels(self.fid).observe(time.perf_counter() - started)
        spend = self._spend(plan, result)
        if spend is not None:
            self.metrics.epsilon_spent.labels(self.fid, "example").set(spend.epsilon)
        update = self.make_update(
            plan,
            session.scheme,
            result.delta,
            num_examples=public.train,
            spend=spend,
            validation=(loss, public.held_out) if loss is not None and public.held_out else None,
            cohort=cohort,
            layout=model.layout,
        )
        held = await self.upload(session.edge, update, deadline=plan.deadline)
        if held and cohort is not None:
            try:
                await cohort.finish()
            except (SecAggError, PeerRefusedError) as e:
                # The upload is held; without this hospital's answer the edge unmasks from its neighbours'.
                log.warning(
                    "left the masking cohort before unmasking",
                    extra={"round": plan.round, "code": "cohort_left", "data": {"why": str(e)}},
                )
        if held:
            log.info(
                "uploaded",
                extra={
                    "round": plan.round,
                    "data": {"epsilon": spend.epsilon if spend else None, "bytes": len(update.ciphertext)},
                },
            )
        return held

    @staticmethod
    async def _precomputed(task: asyncio.Task[None], round_: int) -> None:
        """Wait for the encryption's precomputation. If it failed (a worker process killed), the encryption
        computes what is missing itself: slower, never wrong, so the round goes on."""
        try:
            await task
        except CryptoError as e:
            log.warning(
                "precomputing the encryption failed; it will be computed while encrypting",
                extra={"round": round_, "code": "precompute_failed", "data": {"why": str(e)}},
            )

    async def _cohort(self, session: _Session, plan: RoundPlan) -> CohortSession:
        """This hospital's place in its edge's masking cohort for `plan`'s round, joined before training.
        Raises `SecAggError` (the round is skipped) when the cohort is one this hospital must not join."""
        response = await session.cloud.request(
            "GET", f"/federations/{self.fid}/identity-keys", params={"edge_id": self.settings.edge_id}
        )
        cohort = CohortSession(
            plan,
            client_id=self.settings.client_id,
            edge_id=self.settings.edge_id,
            key=self.key,
            identities=IdentityKeys.model_validate_json(response.content),
            edge=session.edge,
            min_survivors=session.spec.min_clients_per_edge,
            # Until the round's upload deadline, and the edge's closing stages after it.
            wait_s=max(0.0, (_aware(plan.deadline) - self.cloud_time()).total_seconds()) + COHORT_GRACE_S,
        )
        await cohort.join()
        return cohort

    async def _model_for(
        self, session: _Session, plan: RoundPlan, rank: int, train: Dataset, held_out: Dataset | None
    ) -> Any:
        """The model at `rank` with the plan's basis installed, its inputs encoded once per model. A basis
        that is not the plan's digest raises `PlanRefusedError`."""
        model = session.model
        if model is None or model.rank != rank:
            model = session.model = self._build_model(session.spec, rank)
            session.basis_digest = None
            task = task_for(session.spec)
            tokenizer = task.tokenizer(self.model_path)
            session.features, session.validation = await asyncio.to_thread(
                self._encode, task, model, tokenizer, train, held_out, plan.training.max_seq_length
            )
        bases, digest = await self.basis(
            session.cloud, plan, session.spec, layout=model.layout, in_features=model.in_features()
        )
        if digest != session.basis_digest:
            if session.basis_digest is not None or plan.basis_version != session.spec.basis_version:
                # A re-based basis (seed 001's third stage), checked against the plan's digest.
                model.install_basis(bases)
                log.info(
                    "switched to a broadcast basis", extra={"data": {"basis_version": plan.basis_version}}
                )
            session.basis_digest = digest
        return model

    def _refused(self, plan: RoundPlan, error: PlanRefusedError) -> None:
        """Skip `plan`'s round: no training, no upload; the next plan is awaited as usual."""
        log.warning(
            "plan refused: %s",
            error,
            extra={
                "round": plan.round,
                "code": "plan_refused",
                "data": {"field": error.field, "value": str(error.value), "limit": str(error.limit)},
            },
        )
        self._done(plan.round)

    # -- what the hospital releases about its data (`client_agent.releases`) -----------------------------
    def public_count(self, examples: int) -> int:
        """The example count as released, drawn once with noise and charged to both parts' histories; the
        state is saved before anything is sent."""
        if self.state.public_examples is None:
            self.state.public_examples = noisy_count(examples)
            self.state.privacy = [COUNT_ENTRY, *(self.state.privacy or [])]
            self.state.held_out_privacy = [COUNT_ENTRY, *(self.state.held_out_privacy or [])]
            self.state.save(self.state_path)
            log.info(
                "example count released with noise",
                extra={"data": {"examples": examples, "released": self.state.public_examples}},
            )
        return self.state.public_examples

    def split_key(self) -> bytes:
        if self.state.split_key is None:
            self.state.split_key = new_split_key().hex()
            self.state.save(self.state_path)
        return bytes.fromhex(self.state.split_key)

    def _done(self, round_: int) -> None:
        self.state.last_round = max(
            round_, self.state.last_round if self.state.last_round is not None else -1
        )
        self.state.save(self.state_path)

    def _spend(self, plan: RoundPlan, result: LocalResult) -> LocalSpend | None:
        """Both parts' histories and the larger of their epsilons (parallel composition)."""
        if result.epsilon is None:
            return None
        dp = plan.local_dp
        # The held-out part's history once it holds more than the count's release (which the training
        # part's history carries too).
        held_out = tuple(self.state.held_out_privacy or ())
        held_out = held_out if len(held_out) > 1 else ()
        epsilon = max(result.epsilon, epsilon_of(held_out, delta=dp.delta, accountant=dp.accountant))
        return LocalSpend(
            epsilon=epsilon,
            delta=dp.delta,
            accountant=dp.accountant,
            history=tuple(self.state.privacy or ()),
            budget=self._local_budget(plan),
            held_out_history=held_out,
        )

    def _local_budget(self, plan: RoundPlan) -> float:
        own = self.settings.local_epsilon_budget
        return min(plan.local_dp.epsilon, own) if own is not None else plan.local_dp.epsilon

    @staticmethod
    def _encode(
        task: TaskKind,
        model: Any,
        tokenizer: object,
        train: Dataset,
        held_out: Dataset | None,
        max_length: int,
    ) -> tuple[Any, Any | None]:
        features = task.encode(model, tokenizer, train, max_length=max_length)
        if held_out is None:
            return features, None
        return features, task.encode(model, tokenizer, held_out, max_length=max_length)

    def _build_model(self, spec: FederationSpec, rank: int) -> Any:
        return task_for(spec).build_model(self.model_path, spec, rank=rank).to(self.device)

    def _dp_settings(self, plan: RoundPlan, spec: FederationSpec) -> DPSettings | None:
        dp = plan.local_dp
        if not dp.enabled:
            return None
        return DPSettings(
            epsilon=self._local_budget(plan),
            delta=dp.delta,
            max_grad_norm=dp.max_grad_norm,
            rounds=spec.rounds,
            accountant=dp.accountant,
            spent_before=(COUNT_ENTRY,),
        )

    def _held_out_loss(
        self,
        model: Any,
        validation: Any,
        start: np.ndarray,
        plan: RoundPlan,
        spec: FederationSpec,
        public: PublicCounts,
    ) -> float | None:
        """The starting adapter's held-out loss, released with noise calibrated so that the planned rounds
        spend this hospital's budget on the held-out part; None (nothing released) once they have."""
        dp = self._dp_settings(plan, spec)
        if dp is None or spec.convergence is None or public.held_out is None:
            return None
        history = list(self.state.held_out_privacy or [COUNT_ENTRY])
        sigma = calibrate(
            epsilon=dp.epsilon,
            delta=dp.delta,
            accountant=dp.accountant,
            fixed=dp.spent_before,
            sample_rate=1.0,
            steps=spec.rounds,
        )
        entry = validation_entry(sigma)
        after = epsilon_of([*history, entry], delta=dp.delta, accountant=dp.accountant)
        if after > dp.epsilon * (1.0 + BUDGET_ROUNDING):
            log.warning(
                "held-out loss not reported: its budget is spent",
                extra={"round": plan.round, "data": {"epsilon_after": after, "budget": dp.epsilon}},
            )
            return None
        model.load_global(start)
        loss = release_loss(
            task_for(spec).example_losses(model, validation),
            loss_clip=spec.convergence.loss_clip,
            noise_multiplier=sigma,
            public_count=public.held_out,
        )
        self.state.held_out_privacy = appended(history, entry)
        return loss

    def _train(
        self,
        model: Any,
        features: Any,
        start: np.ndarray,
        plan: RoundPlan,
        spec: FederationSpec,
        public: PublicCounts,
        *,
        insecure_seed: int | None = None,
    ) -> LocalResult:
        """Train `model` from `start` as `plan` asks, then apply the strategy's client-side hook to the delta.
        `insecure_seed` (`LocalConfig.insecure_seed`) is for tests that repeat a simulated hospital's draws
        exactly; the agent's rounds never pass it."""
        history = PrivacyHistory(list(self.state.privacy or [COUNT_ENTRY]))
        settings = self._dp_settings(plan, spec)
        batch_size = min(plan.training.batch_size, public.train)
        if settings is not None:
            try:
                check_budget(
                    history,
                    settings,
                    num_examples=public.train,
                    batch_size=batch_size,
                    steps_per_round=plan.training.local_steps,
                )
            except BudgetExhaustedError as e:
                raise LocalBudgetExhaustedError(f"round {plan.round}: {e}") from e
        config = LocalConfig(
            steps=plan.training.local_steps,
            batch_size=batch_size,
            learning_rate=plan.training.learning_rate,
            head_learning_rate=plan.training.head_learning_rate,
            optimizer=plan.training.optimizer,
            insecure_seed=insecure_seed,
            threads=self.settings.threads,
            progress=False,
            dp=settings,
        )
        try:
            result = task_for(spec).train(
                model,
                features,
                global_vector=start,
                config=config,
                history=history,
                public_examples=public.train,
            )
        finally:
            # The steps that ran are spent even if training failed part-way.
            self.state.privacy = list(history.entries)
            self.state.save(self.state_path)
        # The strategy's client-side hook (FedRot: rotate the trained factors toward the global ones, B A
        # unchanged) on the delta before it is clipped and encrypted.
        delta = strategy_for(spec).prepare_delta(
            model, result.delta, global_vector=start, round_index=plan.round
        )
        return dataclasses.replace(result, delta=delta)


_FRAME = {"Content-Type": UPLOAD_FRAME_MEDIA_TYPE}


def _aware(moment: datetime) -> datetime:
    """A wire time with its zone: naive ones are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
