"""How fast one edge ingests large uploads, one at a time and many at once, and where the time goes.

    .venv/bin/python bench/edge_ingest.py            # 150 k and 1 M values; 1 and 100 concurrent uploads
    .venv/bin/python bench/edge_ingest.py --quick    # 150 k values only, fewer uploads: about a minute

Everything is real: `redis-server`, the cloud and the edge as `python -m` processes on loopback
(`bench/edge_load_world.py`), hospitals enrolled through the cloud, CKKS uploads (the federation's default
parameters) under the federation's public key, signed, sent to the edge's public upload route with httpx.
The adapter's size comes from the base model's config (a BERT-shaped config of hidden size 1024, `value`
targeted in every layer at rank 16: 9 layers give 149,506 values, 64 layers 1,050,626).

Per size it runs, in one round, `--uploads-one` uploads one at a time and then `--uploads-many` at
`--connections` concurrent uploads, and prints for each: acknowledged uploads per second (the request path:
the answer waits for the ciphertext to be stored, not added), folded uploads per second (until the edge's
folder has added every acknowledged upload into the round's sum, read from its `/metrics`), values per
second, bytes per value on the wire, the ratio of the concurrent throughput to the one-at-a-time one, and
the seconds per upload in each phase the edge times (`fedlora_edge_upload_phase_seconds`): receive, parse,
checks and store on the request path, fold_read, fold_add and checkpoint in the folder.

The concurrency of 1 M-value uploads is capped so that the uploads in flight (four copies of each at most,
as tests/e2e/test_edge_load.py bounds the edge's memory) fit in a quarter of the memory available: the run
says when it capped it. Figures are noisy where other work shares the cores: the ratios measured in one
run are what to compare, with the load average printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from edge_load_world import (
    EDGE_ID,
    FID,
    World,
    enrol_hospitals,
    signed_upload,
    start_round,
    start_world,
)
from transformers import BertConfig

from protocol.crypto import CKKSParams, scheme_from_public
from protocol.messages import CentralDPConfig, FederationSpec, NoiseMechanism

PHASES = ("receive", "parse", "checks", "store", "fold_read", "fold_add", "checkpoint")
LAYERS = {149_506: 9, 1_050_626: 64}  # adapter values -> BERT layers (hidden 1024, rank 16, `value`)
DISTINCT = 2  # distinct ciphertexts the hospitals send (each upload is signed with its own nonce)
FOLD_WAIT_S = 600.0


@dataclass
class Phase:
    values: int
    connections: int
    uploads: int
    acknowledged_s: float
    folded_s: float
    upload_bytes: int
    seconds_per_upload: dict[str, float]

    @property
    def acknowledged_per_s(self) -> float:
        return self.uploads / self.acknowledged_s

    @property
    def folded_per_s(self) -> float:
        return self.uploads / self.folded_s


def spec_for(values: int) -> FederationSpec:
    return FederationSpec(
        federation_id=FID,
        target_modules=("value",),
        r_max=16,
        rounds=1,
        min_clients_per_edge=2,
        quorum=1.0,
        central_dp=CentralDPConfig(mechanism=NoiseMechanism.NONE, noise_multiplier=0.0),
        round_deadline_s=3600 + 60,
        upload_deadline_s=3600,
        he=CKKSParams(),
    )


def model_config(folder: Path, values: int) -> Path:
    """A base model's config alone (the cloud derives the layout from it, on the meta device)."""
    folder.mkdir(parents=True, exist_ok=True)
    BertConfig(
        vocab_size=128,
        hidden_size=1024,
        num_hidden_layers=LAYERS[values],
        num_attention_heads=16,
        intermediate_size=64,
    ).save_pretrained(folder)
    return folder


async def phase_seconds(client: httpx.AsyncClient) -> dict[str, tuple[float, int]]:
    """Each phase's (sum of seconds, count) from the edge's /metrics."""
    text = (await client.get("/metrics")).text
    found: dict[str, tuple[float, int]] = {}
    for phase in PHASES:
        label = f'phase="{phase}"'
        total = count = 0.0
        for line in text.splitlines():
            if line.startswith("fedlora_edge_upload_phase_seconds_sum") and label in line:
                total = float(line.rsplit(" ", 1)[1])
            elif line.startswith("fedlora_edge_upload_phase_seconds_count") and label in line:
                count = float(line.rsplit(" ", 1)[1])
        found[phase] = (total, int(count))
    return found


async def run_phase(
    client: httpx.AsyncClient, bodies: list[bytes], *, connections: int, values: int
) -> Phase:
    before = await phase_seconds(client)
    streaming = "fedlora_edge_upload_phase_seconds" in (await client.get("/metrics")).text
    gate = asyncio.Semaphore(connections)
    url = f"/federations/{FID}/rounds/0/uploads"

    async def send(body: bytes) -> None:
        async with gate:
            response = await client.post(url, content=body, headers={"Content-Type": "application/json"})
            if response.status_code != 202:
                raise RuntimeError(f"upload refused: {response.status_code} {response.text[:300]}")

    started = time.perf_counter()
    await asyncio.gather(*(send(body) for body in bodies))
    acknowledged = time.perf_counter() - started
    folded_before = before["fold_add"][1]
    give_up = time.perf_counter() + FOLD_WAIT_S
    # An edge that exports no phases (the code before the folder: it added each upload before answering)
    # has folded what it acknowledged.
    while streaming and (await phase_seconds(client))["fold_add"][1] < folded_before + len(bodies):
        if time.perf_counter() > give_up:
            raise RuntimeError("the edge did not fold the uploads in time")
        await asyncio.sleep(0.05)
    folded = time.perf_counter() - started
    after = await phase_seconds(client)
    per_upload = {p: (after[p][0] - before[p][0]) / len(bodies) for p in PHASES}
    body_bytes = len(bodies[0])
    return Phase(values, connections, len(bodies), acknowledged, folded, body_bytes, per_upload)


def fitting(values: int, *, one: int, many: int, connections: int) -> tuple[int, int]:
    """The concurrent uploads and concurrency that fit in a quarter of the memory available: the bench's
    bodies, the edge's copies of those in flight (four each at most) and the store's copy of each upload."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    body = 45 * values  # CKKS at N = 8192: 32 bytes a value, and base64 in JSON
    uploads = max(2, available // 4 // (2 * body) - one)
    if uploads < many:
        print(f"{values:,} values: {many} uploads sent concurrently cut to {uploads} by the memory available")
    wide = max(1, min(connections, min(uploads, many), available // 4 // (4 * body)))
    if wide < connections:
        print(f"{values:,} values: {connections} concurrent uploads capped at {wide} by the memory available")
    return min(uploads, many), wide


async def one_size(folder: Path, values: int, *, one: int, many: int, connections: int) -> list[Phase]:
    many, connections = fitting(values, one=one, many=many, connections=connections)
    world: World = await start_world(
        folder, model_path=model_config(folder / "model", values), spec=spec_for(values), max_body_bytes=2**30
    )
    try:
        hospitals = await enrol_hospitals(world, one + many, concurrency=8)
        info, whole_plan = await start_round(world)
        plan = whole_plan.view(EDGE_ID)
        public = (await world.admin.get(f"/federations/{FID}/public-context")).content
        scheme = scheme_from_public(info.spec.he, public)
        rng = np.random.default_rng(0)
        ciphertexts = [
            scheme.serialize(scheme.encrypt(rng.uniform(-0.01, 0.01, info.layout_size)))
            for _ in range(DISTINCT)
        ]
        bodies = [signed_upload(h, plan, ciphertexts[i % DISTINCT]) for i, h in enumerate(hospitals)]
        del ciphertexts
        wide = connections
        async with httpx.AsyncClient(base_url=world.edge.url, timeout=600) as client:
            return [
                await run_phase(client, bodies[:one], connections=1, values=values),
                await run_phase(client, bodies[one:], connections=wide, values=values),
            ]
    finally:
        await world.close()


def report(phases: list[Phase]) -> None:
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    header = (
        f"{'values':>10} {'conc':>4} {'n':>4} {'ack/s':>7} {'folded/s':>8} {'Mvalues/s':>9} {'B/value':>7} "
        + " ".join(f"{p:>10}" for p in PHASES)
    )
    print(header + "   (phases: ms per upload)")
    for p in phases:
        print(
            f"{p.values:>10,} {p.connections:>4} {p.uploads:>4} {p.acknowledged_per_s:>7.2f} "
            f"{p.folded_per_s:>8.2f} {p.folded_per_s * p.values / 1e6:>9.2f} {p.upload_bytes / p.values:>7.1f} "
            + " ".join(f"{1000 * p.seconds_per_upload[x]:>10.1f}" for x in PHASES)
        )
    for values in sorted({p.values for p in phases}):
        serial, wide = [p for p in phases if p.values == values][:2]
        print(
            f"{values:,} values: {wide.connections} concurrent vs 1 at a time: acknowledged "
            f"{wide.acknowledged_per_s / serial.acknowledged_per_s:.2f}x, folded "
            f"{wide.folded_per_s / serial.folded_per_s:.2f}x"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="150 k values only, few uploads (about a minute)"
    )
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--uploads-one", type=int, default=None, help="uploads sent one at a time, per size")
    parser.add_argument("--uploads-many", type=int, default=None, help="uploads sent concurrently, per size")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    sizes = [149_506] if args.quick else [149_506, 1_050_626]
    one = args.uploads_one or (10 if args.quick else 20)
    many = args.uploads_many or (args.connections if args.quick else 2 * args.connections)
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="edge-ingest-") as tmp:
        for values in sizes:
            phases += await one_size(
                Path(tmp) / str(values), values, one=one, many=many, connections=args.connections
            )
    report(phases)
    if args.json is not None:
        rows = [
            asdict(p) | {"acknowledged_per_s": p.acknowledged_per_s, "folded_per_s": p.folded_per_s}
            for p in phases
        ]
        args.json.write_text(json.dumps({"load_average": os.getloadavg(), "phases": rows}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
