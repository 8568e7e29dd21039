"""The edge's API token in its state store, so that every replica of the edge uses the live one."""

from __future__ import annotations

from services import keyspace
from services.store import StateStore


class StoredToken:
    """`TokenShelf` over a `StateStore` key. The token is a bearer secret: whoever reads the store can call
    the cloud as this edge (though not sign aggregates, which needs the edge's private key file)."""

    def __init__(self, store: StateStore, *, edge_id: str, federation_id: str) -> None:
        self._store = store
        self._key = keyspace.edge_api_token(edge_id, federation_id)

    async def load(self) -> str | None:
        raw = await self._store.get(self._key)
        return raw.decode() if raw else None

    async def save(self, token: str) -> None:
        await self._store.set(self._key, token.encode())
