"""Enrolment of edges and clients: their Ed25519 public keys, and one live API token each.

An identity is its public key: enrolling again with the same key (a restarted edge, a hospital that lost
its token) gets a fresh token and revokes the old one; another key for a taken id is a conflict.
The cloud keeps only each token's SHA-256.
"""

from __future__ import annotations

import json
import logging

from cloud_server.errors import ConflictError, NotFoundError
from cloud_server.federations import FederationService
from cloud_server.records import ClientStats, TokenRecord
from protocol.ffa import initial_rank
from protocol.messages import ClientEnrolment, ClientInfo, EdgeEnrolment, EdgeInfo, Enrolled, Role
from services import keyspace
from services.clock import TimeSource
from services.identity import new_token, token_digest
from services.store import StateStore

log = logging.getLogger("fedlora.cloud")


class EnrolmentService:
    def __init__(self, store: StateStore, federations: FederationService, *, clock: TimeSource) -> None:
        self._store = store
        self._federations = federations
        self._clock = clock

    # -- enrolment ------------------------------------------------------------------------------------
    async def enrol_edge(self, fid: str, request: EdgeEnrolment) -> tuple[Enrolled, bool]:
        """(the answer, whether the edge is new)."""
        await self._federations.require_running(fid)
        info = EdgeInfo(
            edge_id=request.edge_id,
            url=request.url,
            public_key=request.public_key,
            enrolled_at=await self._clock(),
        )
        key = keyspace.fed_edges(fid)
        created = await self._store.hset_if_absent(key, request.edge_id, info.model_dump_json().encode())
        if not created:
            existing = await self.edge(fid, request.edge_id)
            if existing is None or existing.public_key != request.public_key:
                raise ConflictError(
                    f"edge {request.edge_id!r} is enrolled with another public key", field="public_key"
                )
            if existing.url != request.url:
                updated = existing.model_copy(update={"url": request.url})
                await self._store.hset(key, request.edge_id, updated.model_dump_json().encode())
        token = await self._issue_token(fid, Role.EDGE, request.edge_id)
        log.info(
            "edge enrolled" if created else "edge re-enrolled",
            extra={"federation_id": fid, "edge_id": request.edge_id},
        )
        return Enrolled(federation_id=fid, subject=request.edge_id, role=Role.EDGE, api_token=token), created

    async def enrol_client(self, fid: str, request: ClientEnrolment) -> tuple[Enrolled, bool]:
        await self._federations.require_running(fid)
        spec = await self._federations.spec(fid)
        edge = await self.edge(fid, request.edge_id)
        if edge is None:
            raise NotFoundError(f"edge {request.edge_id!r} is not enrolled in {fid!r}", field="edge_id")
        rank = initial_rank(
            spec.rank_policy, num_examples=request.num_examples, r_max=spec.r_max, max_rank=request.max_rank
        )
        info = ClientInfo(
            client_id=request.client_id,
            edge_id=request.edge_id,
            public_key=request.public_key,
            num_examples=request.num_examples,
            rank=rank,
            max_rank=min(request.max_rank or spec.r_max, spec.r_max),
            enrolled_at=await self._clock(),
        )
        key = keyspace.fed_clients(fid)
        created = await self._store.hset_if_absent(key, request.client_id, info.model_dump_json().encode())
        if not created:
            existing = (await self.clients(fid, with_stats=False)).get(request.client_id)
            if existing is None or existing.public_key != request.public_key:
                raise ConflictError(
                    f"client {request.client_id!r} is enrolled with another public key", field="public_key"
                )
            if existing.num_examples != request.num_examples:
                # A hospital releases its noisy count once; another one means it drew again (its state folder
                # was lost), a second release of its data the federation would not see charged.
                raise ConflictError(
                    f"client {request.client_id!r} enrolled with {existing.num_examples} examples, not "
                    f"{request.num_examples}: a hospital's count is released once; restore its state folder",
                    field="num_examples",
                )
            updated = info.model_copy(update={"enrolled_at": existing.enrolled_at})
            await self._store.hset(key, request.client_id, updated.model_dump_json().encode())
        token = await self._issue_token(fid, Role.CLIENT, request.client_id)
        log.info(
            "client enrolled" if created else "client re-enrolled",
            extra={"federation_id": fid, "client_id": request.client_id, "edge_id": request.edge_id},
        )
        enrolled = Enrolled(
            federation_id=fid, subject=request.client_id, role=Role.CLIENT, api_token=token, edge_url=edge.url
        )
        return enrolled, created

    async def _issue_token(self, fid: str, role: Role, subject: str) -> str:
        token = new_token()
        digest = token_digest(token)
        record = TokenRecord(role=role, subject=subject)
        await self._store.hset(keyspace.fed_tokens(fid), digest, record.dump())
        # The subject's pointer decides which of its tokens is live: moving it revokes the previous one.
        await self._store.set(keyspace.fed_subject_token(fid, role.value, subject), digest.encode())
        return token

    async def token_subject(self, fid: str, digest: str) -> TokenRecord | None:
        """Who a live API token stands for, or None (unknown or revoked)."""
        raw = await self._store.hget(keyspace.fed_tokens(fid), digest)
        if raw is None:
            return None
        record = TokenRecord.model_validate_json(raw)
        live = await self._store.get(keyspace.fed_subject_token(fid, record.role.value, record.subject))
        return record if live == digest.encode() else None

    # -- rosters --------------------------------------------------------------------------------------
    async def edge(self, fid: str, edge_id: str) -> EdgeInfo | None:
        raw = await self._store.hget(keyspace.fed_edges(fid), edge_id)
        return EdgeInfo.model_validate_json(raw) if raw is not None else None

    async def edges(self, fid: str) -> list[EdgeInfo]:
        await self._federations.spec(fid)
        raw = await self._store.hgetall(keyspace.fed_edges(fid))
        return [EdgeInfo.model_validate_json(raw[eid]) for eid in sorted(raw)]

    async def clients(
        self, fid: str, *, edge_id: str | None = None, with_stats: bool = True
    ) -> dict[str, ClientInfo]:
        """Enrolled clients by id (at `edge_id` only, if given), with their participation when `with_stats`."""
        await self._federations.spec(fid)
        raw = await self._store.hgetall(keyspace.fed_clients(fid))
        clients = {cid: ClientInfo.model_validate_json(raw[cid]) for cid in sorted(raw)}
        current = await self._store.get(keyspace.fed_ranks(fid))
        if current is not None:  # ranks the policy has grown since enrolment
            for cid, rank in json.loads(current).items():
                if cid in clients:
                    clients[cid] = clients[cid].model_copy(update={"rank": rank})
        if edge_id is not None:
            clients = {cid: c for cid, c in clients.items() if c.edge_id == edge_id}
        if with_stats:
            for cid, client in clients.items():
                stats_raw = await self._store.get(keyspace.fed_client_stats(fid, cid))
                if stats_raw is not None:
                    stats = ClientStats.model_validate_json(stats_raw)
                    clients[cid] = client.model_copy(update=stats.model_dump())
        return clients
