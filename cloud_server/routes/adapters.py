from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from cloud_server.auth import AdminDep, AdminOrClientDep
from cloud_server.deps import AdaptersDep
from cloud_server.routes import errors
from protocol.messages import AdapterEvaluation, AdapterVersion

router = APIRouter(prefix="/federations/{fid}/adapters", tags=["adapters"], responses=errors(503))

Version = Annotated[int, Path(ge=0, description="adapter version")]


@router.get(
    "",
    summary="Adapter versions with their round, update norm and evaluation",
    responses=errors(401, 403, 404, 422),
)
async def list_versions(fid: str, _: AdminDep, adapters: AdaptersDep) -> list[AdapterVersion]:
    """Oldest first: version 0 (zeros, before training), then one per closed round (a re-basing adds
    another), each with the latest evaluation recorded for it."""
    return await adapters.versions(fid)


@router.put(
    "/{version}/evaluation",
    summary="Record a held-out evaluation of an adapter version",
    responses=errors(401, 403, 404, 422),
)
async def record_evaluation(
    fid: str, version: Version, body: AdapterEvaluation, _: AdminDep, adapters: AdaptersDep
) -> AdapterVersion:
    """Replaces any earlier evaluation of this version; the cloud sets `evaluated_at`. Version `v` is the
    adapter after round `v - 1` (version 0: before training), so the dashboard plots accuracy per round."""
    return await adapters.record_evaluation(fid, version, body)


@router.get(
    "/{version}/vector",
    summary="The global adapter vector",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **errors(401, 403, 404, 410, 422)},
)
async def vector(fid: str, version: Version, _: AdminOrClientDep, adapters: AdaptersDep) -> Response:
    """float32 little-endian, `FederationInfo.layout_size` values; 410 `version_pruned` for a version older
    than the last `retain_versions`. Not for edges (403): an edge sums ciphertexts and needs no model."""
    return Response(await adapters.vector(fid, version), media_type="application/octet-stream")


@router.get(
    "/{version}",
    summary="The global adapter as a PEFT adapter (zip)",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}, **errors(401, 403, 404, 410, 422)},
)
async def peft_adapter(fid: str, version: Version, _: AdminOrClientDep, adapters: AdaptersDep) -> Response:
    """`adapter_config.json` + `adapter_model.safetensors` (loads with `peft.PeftModel.from_pretrained`, the
    head as `modules_to_save`) and, for a classifier, the model it adapts (`config.json`,
    `modeling_fedlora.py`): stock `transformers` + `peft` run it in `pipeline("text-classification")`."""
    data = await adapters.peft_zip(fid, version)
    headers = {"Content-Disposition": f'attachment; filename="{fid}-adapter-v{version}.zip"'}
    return Response(data, media_type="application/zip", headers=headers)
