"""A simulated hospital's round, wherever it runs: in the simulation's own process or in a Ray worker.

The simulation's driver decides everything a round's hospital needs from the run (its round, its noisy
count, its DP history so far, its noise share, its masks) and writes it into a `HospitalJob`; a
`HospitalSite` (one per process: a model, the public scheme, the strategy, the hospitals' encoded data)
trains and seals it as the agent does and answers a `HospitalOutcome`. Every seeded draw a job makes is
derived from (seed, round, hospital index), never from the order the jobs run in, so the one-process path
and a pool of workers give the same uploads.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from client_agent.device import training_device
from client_agent.model import default_model_path
from client_agent.tasks import task_for
from client_agent.train import DPSettings, LocalConfig, PrivacyHistory
from client_agent.update import Sealed, contribution, seal
from fedlora.cohorts import MaskedSeal
from fedlora.simulation_rounds import (
    Contamination,
    contaminate,
    flipped,
    local_update,
    rounding_rng,
    share_sampler,
    training_seed,
)
from protocol.crypto import HEScheme, scheme_from_public
from protocol.messages import FederationSpec, NoiseShare
from protocol.strategies import AggregationStrategy, strategy_for

WEIGHT = 1.0  # every hospital's weight: uniform weights keep the client-level sensitivity at `C`


@dataclass
class HospitalRound:
    hospital: str
    edge: str
    examples: int
    accuracy_local: float
    epsilon: float | None
    upload_bytes: int
    seconds: float
    encrypt_s: float = 0.0
    contaminated: bool = False
    delta_norm: float = 0.0  # L2 norm of what the hospital uploaded, before encryption


@dataclass(frozen=True)
class HospitalSettings:
    """What every hospital of a run trains and seals with (the simulation's config, as far as a hospital
    sees it): picklable, so that a worker in another process builds its `HospitalSite` from it."""

    spec: FederationSpec
    public_key: bytes  # the scheme's public material; no hospital ever holds the secret
    num_labels: int
    model_path: Path | None  # None: the base model of `default_model_path()` where the site runs
    rank: int  # the rank of the site's own model (the run's `rank`, `r_max`); a job may ask for a lower one
    steps: int
    batch_size: int
    learning_rate: float
    threads: int
    clip_norm: float | None
    dp: DPSettings | None
    contamination: Contamination
    contamination_scale: float
    seed: int
    insecure_reproducible: bool
    progress: bool = False


@dataclass(frozen=True)
class HospitalJob:
    """One hospital's part of one round, as the driver decided it."""

    round_: int
    index: int
    name: str
    edge: str
    public_examples: int
    history: PrivacyHistory  # its DP-SGD history before this round
    share: NoiseShare | None
    contaminated: bool
    encrypt: MaskedSeal | None  # its masking cohort's seal, if the federation masks
    rank: int  # its LoRA rank this round (the plan's): it trains and uploads the first `rank` columns of B
    held: np.ndarray | None  # `protocol.reach.planned_hold` of the round's plan: coordinates it zeroes
    #: The broadcast basis (`A_max` per module) after a re-basing; None: the seeded one of the spec.
    bases: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True)
class HospitalOutcome:
    index: int
    row: HospitalRound
    sealed: Sealed
    history: PrivacyHistory  # after this round


class HospitalSite:
    """The hospitals' side of one process: a model standing in for every hospital's copy (each round
    starts with `load_global`), the public scheme, the strategy, and the encoded examples of the
    hospitals it serves, by index."""

    def __init__(
        self,
        settings: HospitalSettings,
        model: Any,  # the task's model (`client_agent.tasks`)
        features: Mapping[int, Any],
        *,
        scheme: HEScheme[Any] | None = None,
        strategy: AggregationStrategy | None = None,
    ) -> None:
        self.settings, self.model, self.features = settings, model, dict(features)
        self.models = {model.rank: model}  # one model per rank a job asks for, built when first asked
        self.installed: dict[int, Mapping[str, np.ndarray]] = {}  # by rank: the broadcast basis installed
        self.scheme = scheme or scheme_from_public(settings.spec.he, settings.public_key)
        self.strategy = strategy or strategy_for(settings.spec)

    @classmethod
    def build(cls, settings: HospitalSettings, features: Mapping[int, Any]) -> HospitalSite:
        """A site in a fresh process: its own copy of the base model with the federation's adapter."""
        model_path = settings.model_path or default_model_path()
        model = task_for(settings.spec).build_model(model_path, settings.spec, rank=settings.rank)
        model = model.to(training_device())
        return cls(settings, model, features)

    def model_for(self, rank: int, bases: Mapping[str, np.ndarray] | None) -> Any:
        """The site's model at `rank` (the agent's `_model_for`: a model per rank, since peft fixes a LoRA
        module's rank when it injects it), with `bases` installed when the federation re-based."""
        model = self.models.get(rank)
        if model is None:
            model_path = self.settings.model_path or default_model_path()
            task = task_for(self.settings.spec)
            model = task.build_model(model_path, self.settings.spec, rank=rank).to(training_device())
            self.models[rank] = model
        if bases is not None and self.installed.get(rank) is not bases:
            model.install_basis(bases)
            self.installed[rank] = bases
        return model

    def work(self, job: HospitalJob, global_vector: np.ndarray) -> HospitalOutcome:
        """Hospital `job.index` trains from `global_vector` and seals its delta as the agent does (its noise
        share when the round asks for distributed DP; its cohort's masks when the federation masks)."""
        started = time.perf_counter()
        s = self.settings
        model = self.model_for(job.rank, job.bases)
        own = self.features[job.index]
        if job.contaminated and s.contamination == "flip":
            own = flipped(own, num_labels=s.num_labels)
        reproducible = s.insecure_reproducible
        local = LocalConfig(
            steps=s.steps,
            batch_size=min(s.batch_size, job.public_examples),
            learning_rate=s.learning_rate,
            head_learning_rate=s.spec.training.head_learning_rate,
            insecure_seed=training_seed(s.seed, round_=job.round_, hospital=job.index)
            if reproducible
            else None,
            threads=s.threads,
            progress=s.progress,
            dp=s.dp,
        )
        history = PrivacyHistory(list(job.history.entries))
        result = local_update(
            model,
            own,
            global_vector=global_vector,
            config=local,
            history=history,
            strategy=self.strategy,
            round_=job.round_,
            public_examples=job.public_examples,
            task=task_for(s.spec),
        )
        delta = result.delta
        if job.contaminated:
            rng = np.random.default_rng([s.seed, job.round_, job.index])
            delta = contaminate(delta, s.contamination, scale=s.contamination_scale, rng=rng)
        # The agent's `make_update` with the plan the cloud would send this federation (uniform weights).
        seeded_rounding = (
            rounding_rng(s.seed, round_=job.round_, hospital=job.index) if reproducible else None
        )
        values = contribution(
            self.scheme,
            delta,
            weight=WEIGHT,
            clip_norm=s.clip_norm,
            share=job.share,
            sampler=share_sampler(s.seed, round_=job.round_, hospital=job.index) if reproducible else None,
            held=job.held,
            rounding_rng=seeded_rounding,
        )
        self.scheme.precompute(len(values))  # as a hospital could while it trains: not encryption time
        sealed = seal(self.scheme, values, encrypt=job.encrypt)
        row = HospitalRound(
            job.name,
            job.edge,
            result.num_examples,
            result.accuracy_after,
            result.epsilon,
            len(sealed.ciphertext),
            time.perf_counter() - started,
            encrypt_s=sealed.encrypt_s,
            contaminated=job.contaminated,
            delta_norm=float(np.linalg.norm(sealed.contribution)),
        )
        return HospitalOutcome(job.index, row, sealed, history)
