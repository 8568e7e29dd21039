"""Round plans: what a new round asks of clients, and the board that wakes long-polls when one is published.

The board is only a wake-up call: the plan itself is always read from the store, and a waiter also
re-reads the store every `RECHECK_S`, so a plan published by another process is seen too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

from cloud_server.records import ForwardMark, StoredAggregate, forward_mark
from protocol.crypto import PaillierParams
from protocol.messages import (
    ClientInfo,
    DropReason,
    EdgeProgress,
    FederationSpec,
    NoiseMechanism,
    NoiseShare,
    RoundPlan,
    RoundState,
    RoundStatus,
    schedule_multiplier,
)
from protocol.noise import share_for
from protocol.reach import published_rank
from services.identity import SigningKey

log = logging.getLogger("fedlora.cloud")

RECHECK_S = 1.0


class PlanBoard:
    """One `asyncio.Event` per federation, set (and replaced) whenever its plan or state changes."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, fid: str) -> asyncio.Event:
        """Take the event *before* reading the store, so a publication in between is not missed."""
        return self._events.setdefault(fid, asyncio.Event())

    def publish(self, fid: str) -> None:
        event = self._events.pop(fid, None)
        if event is not None:
            event.set()


async def wait_for(
    board: PlanBoard,
    fid: str,
    lookup: Callable[[], Awaitable[RoundPlan | None]],
    *,
    wait_s: float,
    gone: Callable[[], Awaitable[object]] | None = None,
) -> RoundPlan | None:
    """`lookup()` until it gives a plan or `wait_s` seconds pass (then None). `lookup` may raise.

    `gone()` returns once nobody waits for the answer any more (the poll's client disconnected): the wait
    ends then, with None, so that the poll's long-poll slot is free at once, not at the end of its wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    watch = asyncio.ensure_future(gone()) if gone is not None else loop.create_future()
    try:
        while True:
            event = board.event(fid)
            plan = await lookup()
            remaining = deadline - loop.time()
            if plan is not None or remaining <= 0:
                return plan
            woken = asyncio.ensure_future(event.wait())
            try:
                await asyncio.wait(
                    {woken, watch}, timeout=min(remaining, RECHECK_S), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                woken.cancel()
            if watch.done():
                return None
    finally:
        watch.cancel()
        if watch.done() and not watch.cancelled():
            watch.exception()  # a watch that failed (its connection broke) ended the wait as a disconnect


def open_round(
    spec: FederationSpec,
    *,
    round_: int,
    adapter_version: int,
    layout_digest: str,
    clients: Mapping[str, ClientInfo],
    now: datetime,
    rounds_closed: int,
    basis_version: int | None = None,
    vector_sha256: str | None = None,
    basis_sha256: str | None = None,
) -> tuple[RoundPlan, RoundStatus]:
    """The plan (unsigned: see `signed`) and the initial status of a round that every enrolled client is
    asked to join. `vector_sha256` and `basis_sha256` bind it to the bytes of the adapter it starts from and
    of the basis it trains on, so that a hospital can check what it downloads and every hospital of an edge
    can tell (through the plan's digest) that they were all served the same ones.

    `rounds_closed` places the round on the noise schedule (a failed round does not move it on). The plan
    says in advance which LoRA columns can be published: those below the k-th largest planned rank (of each
    cohort, in a masking federation). It asks no more hospitals than the scheme can sum (`within_capacity`).
    """
    if len(clients) > spec.max_clients:  # enrolments that raced past the cap: plan the first max_clients
        log.warning(
            "more hospitals enrolled than max_clients; planning the first by id",
            extra={
                "federation_id": spec.federation_id,
                "enrolled": len(clients),
                "max_clients": spec.max_clients,
            },
        )
        clients = dict(sorted(clients.items())[: spec.max_clients])
    clients = within_capacity(spec, clients, round_=round_)
    dp = spec.central_dp
    share = planned_share(spec, rounds_closed=rounds_closed, clients=len(clients))
    plan = RoundPlan(
        federation_id=spec.federation_id,
        round=round_,
        adapter_version=adapter_version,
        basis_version=spec.basis_version if basis_version is None else basis_version,
        deadline=now + timedelta(seconds=spec.upload_deadline_s),
        client_ranks={cid: info.rank for cid, info in sorted(clients.items())},
        client_edges={cid: info.edge_id for cid, info in sorted(clients.items())},
        clip_norm=spec.central_dp.clip_norm,
        training=spec.training,
        local_dp=spec.local_dp,
        layout_digest=layout_digest,
        clip_norm_ord=1 if dp.mechanism is NoiseMechanism.LAPLACE else 2,
        weighting=dp.weighting,
        weight_cap=dp.weight_cap,
        noise_share=share,
        validation_fraction=spec.convergence.validation_fraction if spec.convergence is not None else None,
        vector_sha256=vector_sha256,
        basis_sha256=basis_sha256,
        published_rank=_published_rank(spec, clients),
    )
    per_edge = Counter(info.edge_id for info in clients.values())
    status = RoundStatus(
        federation_id=spec.federation_id,
        round=round_,
        state=RoundState.OPEN,
        opened_at=now,
        adapter_version_in=adapter_version,
        edges=tuple(
            EdgeProgress(edge_id=edge_id, expected_clients=count, uploads_accepted=0)
            for edge_id, count in sorted(per_edge.items())
        ),
    )
    return plan, status


def within_capacity(
    spec: FederationSpec, clients: Mapping[str, ClientInfo], *, round_: int
) -> dict[str, ClientInfo]:
    """The hospitals a round plans: all of them, or, where they are more than one sum of the scheme can hold
    (`he.max_summands`: packed Paillier's `max_clients`, 64 by default; every edge's sum and the cloud's
    total of them must fit), that many, in turns by region: each round another edge goes first, and edges
    are planned whole (or, past what is left, as a window of at least `k` of their hospitals that moves on
    at each turn), so that every hospital of an edge of `k` or more is planned, with `k - 1` of its own, in
    turn; an edge's window of fewer than `k` would forward nothing. Logged, since a hospital left out sits
    the round out. Planning them all would make the upload past the capacity overflow its edge's sum and
    fail the round, every round."""
    capacity = spec.he.max_summands
    if capacity is None or len(clients) <= capacity:
        return dict(clients)
    k = spec.min_clients_per_edge
    regions: dict[str, list[str]] = {}
    for cid in sorted(clients):
        regions.setdefault(clients[cid].edge_id, []).append(cid)
    edges = sorted(regions)
    first, turn = round_ % len(edges), round_ // len(edges)
    chosen: list[str] = []
    for edge_id in edges[first:] + edges[:first]:
        members, room = regions[edge_id], capacity - len(chosen)
        take = min(len(members), room)
        if take < min(k, len(members)):
            continue
        start = (turn * take) % len(members)
        chosen += (members + members)[start : start + take]
    log.warning(
        "more hospitals enrolled than one encrypted sum can hold; the round plans them in turns by region",
        extra={
            "federation_id": spec.federation_id,
            "round": round_,
            "data": {"enrolled": len(clients), "planned": len(chosen), "he_max_summands": capacity},
        },
    )
    return {cid: clients[cid] for cid in sorted(chosen)}


def _published_rank(spec: FederationSpec, clients: Mapping[str, ClientInfo]) -> int:
    """The rank below which every column is reached by `k` planned hospitals of each sum that can be read:
    the round's in general; each cohort's in a masking federation, where an edge with the cloud reads its
    cohort's sum (an edge with fewer than `k` hospitals forms no cohort and sums nothing)."""
    k = spec.min_clients_per_edge
    if not (isinstance(spec.he, PaillierParams) and spec.he.masking):
        return published_rank((info.rank for info in clients.values()), k=k)
    cohorts: dict[str, list[int]] = {}
    for info in clients.values():
        cohorts.setdefault(info.edge_id, []).append(info.rank)
    return min((published_rank(ranks, k=k) for ranks in cohorts.values() if len(ranks) >= k), default=0)


def planned_share(spec: FederationSpec, *, rounds_closed: int, clients: int) -> NoiseShare | None:
    """The noise share each of a round's `clients` adds before encrypting (None: the cloud adds all of the
    round's noise, or it has none); `rounds_closed` places the round on the noise schedule."""
    dp = spec.central_dp
    multiplier = schedule_multiplier(dp, round_index=rounds_closed, rounds=spec.rounds)
    if not dp.distributed or multiplier <= 0 or clients == 0:
        return None
    return share_for(dp, spec.he, multiplier=multiplier, planned_clients=clients)


def placed(plan: RoundPlan, clients: Mapping[str, ClientInfo]) -> RoundPlan:
    """`plan` with `client_edges`: as stored, or, for a plan opened before plans placed their hospitals,
    each planned hospital's edge in `clients` (the enrolment records as of the plan's round, where the
    round's accounting placed it too)."""
    if plan.client_edges is not None:
        return plan
    edges = {cid: clients[cid].edge_id for cid in plan.client_ranks if cid in clients}
    return plan.model_copy(update={"client_edges": edges})


def signed(plan: RoundPlan, key: SigningKey | None) -> RoundPlan:
    """`plan` with the federation's signature (Ed25519 is deterministic: a transaction that retries signs
    the same bytes); unchanged for a federation without a plan key (created before plans were signed)."""
    if key is None:
        return plan
    return plan.model_copy(update={"signature": key.sign(plan.signing_payload())})


def ended(status: RoundStatus, state: RoundState, now: datetime) -> RoundStatus:
    """`status` closed or failed at `now`, with how long the round ran. Clamped at 0: `now` may come from
    another process's clock than `opened_at`, and a negative duration would not validate when read back."""
    duration = max(0.0, (now - status.opened_at).total_seconds())
    return status.model_copy(update={"state": state, "closed_at": now, "duration_s": duration})


def with_progress(
    status: RoundStatus, forwarded: Mapping[str, StoredAggregate] | Mapping[str, ForwardMark]
) -> RoundStatus:
    """`status` with each edge's forwarded aggregate counted in (its stored header, or its mark: what the
    status of a round in progress reads), and when the cloud accepted it."""
    marks = {
        edge_id: held if isinstance(held, ForwardMark) else forward_mark(held)
        for edge_id, held in forwarded.items()
    }
    edges = {e.edge_id: e for e in status.edges}
    for edge_id, mark in marks.items():
        base = edges.get(edge_id) or EdgeProgress(edge_id=edge_id, expected_clients=0, uploads_accepted=0)
        edges[edge_id] = base.model_copy(
            update={
                "uploads_accepted": mark.count or 0,
                "forwarded": True,
                "bytes_received": mark.ciphertext_bytes or 0,
                "late_accepted": mark.late_count or 0,
                "forwarded_at": mark.received_at,
            }
        )
    return status.model_copy(
        update={
            "edges": tuple(edges[k] for k in sorted(edges)),
            "clients_contributed": sum(m.count or 0 for m in marks.values()),
            "total_weight": sum(m.total_weight or 0.0 for m in marks.values()),
        }
    )


def failed_status(
    status: RoundStatus, forwarded: Mapping[str, StoredAggregate], now: datetime, *, reason: str
) -> RoundStatus:
    """`status` failed at `now` for `reason`, with the aggregates it held counted in and every upload in them
    counted as dropped (`round_failed`): they reach no model."""
    lost = sum(header.count + header.late_count for header in forwarded.values())
    return ended(with_progress(status, forwarded), RoundState.FAILED, now).model_copy(
        update={
            "failure": reason[:2000],
            "uploads_dropped": {DropReason.ROUND_FAILED: lost} if lost else {},
        }
    )
