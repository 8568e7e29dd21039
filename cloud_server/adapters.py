"""The adapter registry: every global adapter version as a raw vector and as a PEFT adapter zip, with the
held-out evaluation an admin recorded for it."""

from __future__ import annotations

import asyncio
import io
import zipfile

from cloud_server.errors import NotFoundError, VersionPrunedError
from cloud_server.federations import FederationService, vector_from_bytes
from protocol.ffa import basis_from_bytes
from protocol.messages import AdapterEvaluation, AdapterVersion, TaskType
from protocol.peft_format import adapter_files
from services import keyspace
from services.classifier_export import ClassifierExportError, classifier_files, read_base_config
from services.clock import TimeSource
from services.errors import InvalidRequestError
from services.store import StateStore
from services.stored_records import read_record


class AdapterService:
    def __init__(self, store: StateStore, federations: FederationService, *, clock: TimeSource) -> None:
        self._store = store
        self._federations = federations
        self._clock = clock

    async def vector(self, fid: str, version: int) -> bytes:
        """float32 little-endian, `layout_size` values; `VersionPrunedError` for a version retention
        deleted."""
        raw = await self._store.get(keyspace.fed_adapter(fid, version))
        if raw is None:
            await self._federations.spec(fid)
            if await self._store.get(keyspace.fed_adapter_meta(fid, version)) is not None:
                raise VersionPrunedError(
                    f"adapter version {version} of {fid!r} was pruned: the cloud keeps the vectors of its last "
                    "retain_versions versions (its meta stays in GET .../adapters)",
                    field="version",
                )
            raise NotFoundError(f"federation {fid!r} has no adapter version {version}", field="version")
        return raw

    async def versions(self, fid: str) -> list[AdapterVersion]:
        latest = (await self._federations.record(fid)).adapter_version
        versions = []
        for version in range(latest + 1):
            found = await self._version(fid, version)
            if found is not None and found.basis_version is None:
                found = found.model_copy(update={"basis_version": await self.basis_of(fid, version)})
            if found is not None:
                versions.append(found)
        return versions

    async def record_evaluation(
        self, fid: str, version: int, evaluation: AdapterEvaluation
    ) -> AdapterVersion:
        """Store `evaluation` for `version` (replacing an earlier one), stamped with the cloud's clock."""
        meta = await read_record(self._store, keyspace.fed_adapter_meta(fid, version), AdapterVersion)
        if meta is None:
            await self._federations.spec(fid)  # an unknown federation is `unknown_federation`
            raise NotFoundError(f"federation {fid!r} has no adapter version {version}", field="version")
        stamped = evaluation.model_copy(update={"evaluated_at": await self._clock()})
        # The version's meta is written once by the round that made it; the evaluation lives beside it.
        key = keyspace.fed_adapter_evaluation(fid, version)
        await self._store.set(key, stamped.model_dump_json().encode())
        return meta.model_copy(update={"evaluation": stamped})

    async def _version(self, fid: str, version: int) -> AdapterVersion | None:
        meta = await read_record(self._store, keyspace.fed_adapter_meta(fid, version), AdapterVersion)
        if meta is None:
            return None
        key = keyspace.fed_adapter_evaluation(fid, version)
        evaluation = await read_record(self._store, key, AdapterEvaluation)
        return meta if evaluation is None else meta.model_copy(update={"evaluation": evaluation})

    async def basis(self, fid: str, version: int) -> bytes:
        """Every module's `A_max` of basis `version` (`protocol.ffa.basis_bytes`): a re-based basis as stored,
        or the federation's seeded one, rebuilt from the seed."""
        return await self._federations.basis_bytes(fid, version)

    async def basis_of(self, fid: str, version: int) -> int:
        """The basis version `version`'s `A` comes from: the one its `AdapterVersion` records.

        A version stored before versions recorded it (only a re-base's did) takes the basis of the nearest
        earlier version that records one, since a basis holds until the next re-base, which records its
        own; with none, the federation's seeded basis.
        """
        for earlier in range(version, -1, -1):
            meta = await self._version(fid, earlier)
            if meta is not None and meta.basis_version is not None:
                return meta.basis_version
        return (await self._federations.spec(fid)).basis_version

    async def peft_zip(self, fid: str, version: int) -> bytes:
        """A zip of the exported adapter: the PEFT adapter (`adapter_config.json`, `adapter_model.safetensors`
        with the head) and the model it adapts (`config.json` of the cloud's base model, `modeling_fedlora.py`),
        which stock `transformers` + `peft` load (`services.classifier_export`)."""
        raw = await self.vector(fid, version)
        spec = await self._federations.spec(fid)
        layout, in_features = await self._federations.layout(fid)
        vector = vector_from_bytes(raw, layout.size, key=keyspace.fed_adapter(fid, version))
        basis_version = await self.basis_of(fid, version)
        bases = (
            basis_from_bytes(await self.basis(fid, basis_version), layout, in_features)
            if basis_version != spec.basis_version
            else None
        )

        def build() -> bytes:
            files = adapter_files(
                layout=layout,
                vector=vector,
                in_features=in_features,
                seed=spec.seed,
                basis_version=spec.basis_version,
                bases=bases,
                alpha=spec.lora_alpha,
                target_modules=spec.target_modules,
                layers_to_transform=spec.layers_to_transform,
                base_model=spec.base_model,
                # A causal LM's folder is a PeftModelForCausalLM's (it has no head of ours).
                task_type="CAUSAL_LM" if spec.task_type is TaskType.CAUSAL_LM else None,
            )
            model_files = (
                classifier_files(
                    base_config=read_base_config(self._federations.model_path),
                    num_labels=spec.num_labels,
                    label_names=spec.label_names,
                    max_length=spec.training.max_seq_length,
                )
                if layout.head
                else {}
            )
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for name, data in sorted({**files.files, **model_files}.items()):
                    archive.writestr(name, data)
            return buffer.getvalue()

        try:
            return await asyncio.to_thread(build)
        except ClassifierExportError as e:
            raise InvalidRequestError(
                f"adapter version {version} of {fid!r} cannot be exported as a transformers classifier: {e} "
                "(its raw vector is at .../vector)",
                field="base_model",
            ) from e
