"""What the edges' clocks are doing: each edge reports, on its plan polls, the offset it measured between
its clock and the cloud's; the cloud keeps the last one per edge (for the admin view of the edges and the
`fedlora_edge_clock_offset_seconds` gauge) and warns when it is more than half the federation's deadline
margin, the skew that deadlines set on the cloud and checked at the edge can absorb."""

from __future__ import annotations

import logging

from cloud_server.federations import FederationService
from protocol.messages import EdgeClock, EdgeInfo, FederationSpec
from services import keyspace
from services.clock import TimeSource
from services.store import StateStore
from services.stored_records import read_hash_records

log = logging.getLogger("fedlora.cloud")


def skew_allowed_s(spec: FederationSpec) -> float:
    """Half the deadline margin: the clock offset past which an edge raises the alert."""
    return spec.deadline_margin_s / 2


class EdgeClocks:
    def __init__(self, store: StateStore, federations: FederationService, *, clock: TimeSource) -> None:
        self._store = store
        self._federations = federations
        self._clock = clock

    async def report(self, fid: str, edge_id: str, offset_s: float) -> EdgeClock:
        """Record `edge_id`'s measured offset (the cloud's time less the edge's, in seconds)."""
        allowed = skew_allowed_s(await self._federations.spec(fid))
        reported = EdgeClock(
            offset_s=offset_s, reported_at=await self._clock(), alert=abs(offset_s) > allowed
        )
        await self._store.hset(keyspace.fed_edge_clocks(fid), edge_id, reported.model_dump_json().encode())
        if reported.alert:
            log.warning(
                "edge clock offset exceeds half the deadline margin",
                extra={
                    "federation_id": fid,
                    "edge_id": edge_id,
                    "code": "clock_skew",
                    "data": {"offset_s": offset_s, "allowed_s": allowed},
                },
            )
        return reported

    async def offsets(self, fid: str) -> dict[str, EdgeClock]:
        # A clock that does not read back is quarantined and shown as unknown: it annotates, never decides.
        return await read_hash_records(self._store, keyspace.fed_edge_clocks(fid), EdgeClock, skip=True)

    async def annotate(self, fid: str, edges: list[EdgeInfo]) -> list[EdgeInfo]:
        """`edges` with the clock each last reported."""
        clocks = await self.offsets(fid)
        return [e.model_copy(update={"clock": clocks.get(e.edge_id)}) for e in edges]
