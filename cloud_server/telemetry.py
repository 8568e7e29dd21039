"""The cloud's Prometheus metrics that need its state: round outcomes, privacy spent, clients per edge,
the edges' clock offsets.

Everything here reads what the round's one store transaction wrote, after it committed, so a metric never
tells of a round that did not happen; and nothing here may fail a round or a scrape (errors are logged).
"""

from __future__ import annotations

import logging
from collections import Counter

from cloud_server.edge_clocks import EdgeClocks
from cloud_server.enrolment import EnrolmentService
from cloud_server.errors import NotFoundError
from cloud_server.federations import FederationService
from protocol.messages import EdgeClock, RoundState, RoundStatus
from services import keyspace
from services.metrics import CloudMetrics
from services.store import StateStore

log = logging.getLogger("fedlora.cloud")


class CloudTelemetry:
    def __init__(
        self,
        store: StateStore,
        federations: FederationService,
        enrolment: EnrolmentService,
        edge_clocks: EdgeClocks,
        metrics: CloudMetrics,
    ) -> None:
        self._store = store
        self._federations = federations
        self._enrolment = enrolment
        self._edge_clocks = edge_clocks
        self.metrics = metrics

    def decrypted(self, scheme: str, seconds: float | None) -> None:
        """The time `HEScheme.decrypt` took on a round's total (None: not measured)."""
        if seconds is not None:
            self.metrics.he_observed("decrypt", scheme, seconds)

    async def round_ended(self, fid: str, round_: int) -> None:
        """Count round `round_` of `fid`, just committed closed or failed, and the uploads its status says
        reach no model; after a close, its duration and the privacy spent as `GET /federations/{fid}/privacy`
        reports it."""
        try:
            raw = await self._store.get(keyspace.fed_round_status(fid, round_))
            status = RoundStatus.model_validate_json(raw or b"")
            if status.state not in (RoundState.CLOSED, RoundState.FAILED):
                return
            self.metrics.rounds.labels(fid, status.state.value).inc()
            for reason, count in status.uploads_dropped.items():
                self.metrics.dropped(fid, reason, count)
                log.warning(
                    f"{count} uploads in round {round_}'s aggregates reach no model: {reason.value}",
                    extra={
                        "federation_id": fid,
                        "round": round_,
                        "code": "uploads_dropped",
                        "data": {"reason": reason.value, "count": count},
                    },
                )
            if status.state is RoundState.CLOSED and status.closed_at is not None:
                seconds = (status.closed_at - status.opened_at).total_seconds()
                self.metrics.round_duration.labels(fid).observe(max(seconds, 0.0))
                await self._privacy(fid)
        except Exception:
            log.warning("could not record the round's metrics", exc_info=True, extra={"federation_id": fid})

    async def _privacy(self, fid: str) -> None:
        report = await self._federations.privacy(fid)
        if report.central_epsilon is not None:
            self.metrics.epsilon_spent.labels(fid, "client").set(report.central_epsilon)
        local = [c.local_epsilon for c in report.clients if c.local_epsilon is not None]
        if local:
            self.metrics.epsilon_spent.labels(fid, "example").set(max(local))

    async def refresh_enrolment(self) -> None:
        """Set `fedlora_clients_per_edge` (every enrolled edge, with 0 clients too), the edges' clock
        offsets and skew alerts, and the records held in quarantine from the store, so that every replica
        reports the same (a roster entry that does not read back is quarantined, and counted, as it is read)."""
        try:
            counts: dict[tuple[str, str], int] = {}
            clocks: dict[tuple[str, str], EdgeClock] = {}
            for fid in await self._federations.ids():
                try:
                    edges = await self._enrolment.edges(fid)
                    clients = await self._enrolment.clients(fid, with_stats=False)
                except NotFoundError:
                    continue  # indexed, but its creation never committed
                per_edge = Counter(c.edge_id for c in clients.values())
                for edge_id in {e.edge_id for e in edges} | per_edge.keys():
                    counts[fid, edge_id] = per_edge[edge_id]
                for edge_id, clock in (await self._edge_clocks.offsets(fid)).items():
                    clocks[fid, edge_id] = clock
        except Exception:
            log.warning("could not read the enrolment for the metrics", exc_info=True)
            return
        finally:
            await self._count_quarantined()
        self.metrics.clients_per_edge.clear()
        for (fid, edge_id), count in counts.items():
            self.metrics.clients_per_edge.labels(fid, edge_id).set(count)
        self.metrics.edge_clock_offset.clear()
        self.metrics.edge_clock_alert.clear()
        for (fid, edge_id), clock in clocks.items():
            self.metrics.edge_clock_offset.labels(fid, edge_id).set(clock.offset_s)
            self.metrics.edge_clock_alert.labels(fid, edge_id).set(int(clock.alert))

    async def _count_quarantined(self) -> None:
        """Set `fedlora_records_quarantined`: the records of each federation held under its quarantine prefix."""
        try:
            counts = {
                fid: len(await self._store.scan(keyspace.fed_quarantine_prefix(fid)))
                for fid in await self._federations.ids()
            }
        except Exception:
            log.warning("could not count the quarantined records for the metrics", exc_info=True)
            return
        self.metrics.records_quarantined.clear()
        for fid, count in counts.items():
            self.metrics.records_quarantined.labels(fid).set(count)
