"""The adapter registry: every global adapter version as a raw vector and as a PEFT adapter zip."""

from __future__ import annotations

import asyncio
import io
import zipfile

from cloud_server.errors import NotFoundError
from cloud_server.federations import FederationService, vector_from_bytes
from protocol.messages import AdapterVersion
from protocol.peft_format import adapter_files
from services import keyspace
from services.store import StateStore

# What the exported head is: the mean-pooled, L2-normalised linear head the client agent trains.
HEAD_INFO = {"pooling": "mean", "normalize": True}


class AdapterService:
    def __init__(self, store: StateStore, federations: FederationService) -> None:
        self._store = store
        self._federations = federations

    async def vector(self, fid: str, version: int) -> bytes:
        """float32 little-endian, `layout_size` values."""
        raw = await self._store.get(keyspace.fed_adapter(fid, version))
        if raw is None:
            await self._federations.spec(fid)
            raise NotFoundError(f"federation {fid!r} has no adapter version {version}", field="version")
        return raw

    async def versions(self, fid: str) -> list[AdapterVersion]:
        latest = (await self._federations.record(fid)).adapter_version
        versions = []
        for version in range(latest + 1):
            raw = await self._store.get(keyspace.fed_adapter_meta(fid, version))
            if raw is not None:
                versions.append(AdapterVersion.model_validate_json(raw))
        return versions

    async def peft_zip(self, fid: str, version: int) -> bytes:
        """A zip of the PEFT adapter directory (`adapter_config.json`, `adapter_model.safetensors`, head)."""
        raw = await self.vector(fid, version)
        spec = await self._federations.spec(fid)
        layout, in_features = await self._federations.layout(fid)
        vector = vector_from_bytes(raw, layout.size)

        def build() -> bytes:
            files = adapter_files(
                layout=layout,
                vector=vector,
                in_features=in_features,
                seed=spec.seed,
                basis_version=spec.basis_version,
                alpha=spec.lora_alpha,
                target_modules=spec.target_modules,
                layers_to_transform=spec.layers_to_transform,
                base_model=spec.base_model,
                head_info={**HEAD_INFO, "num_labels": spec.num_labels},
            )
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for name, data in sorted(files.files.items()):
                    archive.writestr(name, data)
            return buffer.getvalue()

        return await asyncio.to_thread(build)
