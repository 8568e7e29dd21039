"""How fast one edge ingests large uploads, at 1 to 100 uploads at a time, and where the time goes.

    .venv/bin/python bench/edge_ingest.py            # 1 M values; CKKS, Paillier-16, plaintext; 1/8/32/100
    .venv/bin/python bench/edge_ingest.py --quick    # 150 k values, CKKS and plaintext, 1 and 8 at a time
    .venv/bin/python bench/edge_ingest.py --body json    # the JSON body (base64 ciphertext) instead

Everything is real: `redis-server`, the cloud and the edge as `python -m` processes on loopback
(`bench/edge_load_world.py`), hospitals enrolled through the cloud, uploads encrypted under the federation's
public key (CKKS at the federation's default parameters, packed Paillier at 16 bits a value, or no
encryption), signed, and sent to the edge's public upload route with httpx, as the binary frame the
hospitals' agents send (`protocol.upload_frame`) or as JSON. The adapter's size comes from the base model's
config (a BERT-shaped config of hidden size 1024, `value` targeted in every layer at rank 16: 9 layers give
149,506 values, 64 layers 1,050,626).

Per scheme it runs, in one round, a wave of uploads at each concurrency of `--levels` (at least 4 uploads a
wave, one per connection else) and prints, per wave, acknowledged uploads per second (the request path: the
answer waits for the ciphertext to be stored, not added), folded uploads per second (until the edge's folder
has added every acknowledged upload into the round's sum, read from its `/metrics`), values per second and
bytes per value on the wire, and the ratio of the widest wave's throughput to the one-at-a-time one.

Then, per scheme, where an upload's time goes, from the edge's own histogram
(`fedlora_edge_upload_phase_seconds`, timed inside the edge process over the one-at-a-time wave): seconds
per upload in each stage, its share of the upload's total, and the ceiling it alone puts on the ingest rate
(values per second if nothing else took time). The request path's stages run one after another for one
upload; the folder's run beside them on its own thread: whichever path is slower bounds the rate.

The concurrency is capped so that the bodies in flight (the bench's and the edge's copies) fit in half the
memory available: the run says when it capped it. Figures are noisy where other work shares the
cores: compare the ratios measured in one run, with the load average printed beside them.
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
from edge_load_world import EDGE_ID, FID, World, enrol_hospitals, signed_update, start_round, start_world
from transformers import BertConfig

from protocol.crypto import CKKSParams, HEParams, PaillierParams, PlainParams, scheme_from_public
from protocol.messages import CentralDPConfig, ClientUpdate, FederationSpec, NoiseMechanism

REQUEST_STAGES = ("receive", "parse", "signature", "validate", "checks", "store")
FOLD_STAGES = ("sum_read", "fold_read", "fold_parse", "fold_add", "checkpoint")
STAGES = REQUEST_STAGES + FOLD_STAGES
LAYERS = {149_506: 9, 1_050_626: 64}  # adapter values -> BERT layers (hidden 1024, rank 16, `value`)
DISTINCT = 2  # distinct ciphertexts the hospitals send (each upload is signed with its own nonce)
FOLD_WAIT_S = 900.0
SCHEMES: dict[str, HEParams] = {
    "ckks": CKKSParams(),
    "paillier": PaillierParams(quant_bits=16, max_clients=256),
    "plain": PlainParams(),
}
#: Serialised ciphertext bytes per value, a little over (to size the waves to the memory available).
CIPHERTEXT_BYTES_PER_VALUE = {"ckks": 33.0, "paillier": 5.6, "plain": 8.0}


@dataclass
class Wave:
    scheme: str
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


def spec_for(he: HEParams) -> FederationSpec:
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
        he=he,
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


async def stage_seconds(client: httpx.AsyncClient) -> dict[str, tuple[float, int]]:
    """Each stage's (sum of seconds, count) from the edge's /metrics; (0, 0) for a stage it does not time."""
    text = (await client.get("/metrics")).text
    found = dict.fromkeys(STAGES, (0.0, 0))
    for line in text.splitlines():
        if not line.startswith("fedlora_edge_upload_phase_seconds_"):
            continue
        name, _, value = line.rpartition(" ")
        for stage in STAGES:
            if f'phase="{stage}"' in name:
                total, count = found[stage]
                if name.startswith("fedlora_edge_upload_phase_seconds_sum"):
                    found[stage] = (float(value), count)
                elif name.startswith("fedlora_edge_upload_phase_seconds_count"):
                    found[stage] = (total, int(float(value)))
    return found


async def run_wave(
    client: httpx.AsyncClient,
    bodies: list[bytes],
    *,
    scheme: str,
    values: int,
    connections: int,
    binary: bool,
) -> Wave:
    before = await stage_seconds(client)
    gate = asyncio.Semaphore(connections)
    url = f"/federations/{FID}/rounds/0/uploads"
    content_type = "application/json"
    if binary:  # imported here: `--body json` measures an edge from before the binary body too
        from protocol.upload_frame import UPLOAD_FRAME_MEDIA_TYPE

        content_type = UPLOAD_FRAME_MEDIA_TYPE

    async def send(body: bytes) -> None:
        async with gate:
            response = await client.post(url, content=body, headers={"Content-Type": content_type})
            if response.status_code != 202:
                raise RuntimeError(f"upload refused: {response.status_code} {response.text[:300]}")

    started = time.perf_counter()
    await asyncio.gather(*(send(body) for body in bodies))
    acknowledged = time.perf_counter() - started
    give_up = time.perf_counter() + FOLD_WAIT_S
    while (await stage_seconds(client))["fold_add"][1] < before["fold_add"][1] + len(bodies):
        if time.perf_counter() > give_up:
            raise RuntimeError("the edge did not fold the uploads in time")
        await asyncio.sleep(0.05)
    folded = time.perf_counter() - started
    after = await stage_seconds(client)
    per_upload = {s: (after[s][0] - before[s][0]) / len(bodies) for s in STAGES}
    return Wave(scheme, values, connections, len(bodies), acknowledged, folded, len(bodies[0]), per_upload)


def fitting(scheme: str, values: int, levels: list[int], *, binary: bool) -> list[int]:
    """The concurrencies whose bodies fit in half the memory available: the bench's bodies of a wave and the
    edge's copies of those in flight (two each at most: the body read, and the update parsed from it)."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    body = CIPHERTEXT_BYTES_PER_VALUE[scheme] * values * (1 if binary else 4 / 3)
    widest = max(1, int(available // 2 // (3 * body)))
    fitted = sorted({min(level, widest) for level in levels})
    if fitted != sorted(levels):
        print(f"{scheme} at {values:,} values: concurrency capped at {widest} by the memory available")
    return fitted


async def one_scheme(
    folder: Path, scheme: str, values: int, *, levels: list[int], binary: bool
) -> list[Wave]:
    levels = fitting(scheme, values, levels, binary=binary)
    sizes = [max(4, level) for level in levels]
    he = SCHEMES[scheme]
    world: World = await start_world(
        folder, model_path=model_config(folder / "model", values), spec=spec_for(he), max_body_bytes=None
    )
    try:
        hospitals = await enrol_hospitals(world, sum(sizes), concurrency=8)
        info, whole_plan = await start_round(world)
        plan = whole_plan.view(EDGE_ID)
        public = (await world.admin.get(f"/federations/{FID}/public-context")).content
        public_scheme = scheme_from_public(info.spec.he, public)
        rng = np.random.default_rng(0)
        ciphertexts = [
            public_scheme.serialize(public_scheme.encrypt(rng.uniform(-0.01, 0.01, info.layout_size)))
            for _ in range(DISTINCT)
        ]
        waves = []
        async with httpx.AsyncClient(base_url=world.edge.url, timeout=900) as client:
            first = 0
            for level, size in zip(levels, sizes, strict=True):
                wave = hospitals[first : first + size]
                first += size
                updates = [signed_update(h, plan, ciphertexts[i % DISTINCT]) for i, h in enumerate(wave)]
                bodies = [body_of(u, binary=binary) for u in updates]
                del updates
                waves.append(
                    await run_wave(
                        client, bodies, scheme=scheme, values=values, connections=level, binary=binary
                    )
                )
                del bodies
        return waves
    finally:
        await world.close()


def body_of(update: ClientUpdate, *, binary: bool) -> bytes:
    if not binary:
        return update.model_dump_json().encode()
    from protocol.upload_frame import encode_upload  # as UPLOAD_FRAME_MEDIA_TYPE (`run_wave`)

    return encode_upload(update)


def report_waves(waves: list[Wave]) -> None:
    print(f"{'scheme':>8} {'conc':>4} {'n':>4} {'ack/s':>7} {'folded/s':>8} {'Mvalues/s':>9} {'B/value':>7}")
    for w in waves:
        print(
            f"{w.scheme:>8} {w.connections:>4} {w.uploads:>4} {w.acknowledged_per_s:>7.2f} "
            f"{w.folded_per_s:>8.2f} {w.folded_per_s * w.values / 1e6:>9.2f} {w.upload_bytes / w.values:>7.2f}"
        )
    for scheme in dict.fromkeys(w.scheme for w in waves):
        mine = [w for w in waves if w.scheme == scheme]
        one, wide = mine[0], mine[-1]
        print(
            f"{scheme}: {wide.connections} at a time vs 1 at a time: acknowledged "
            f"{wide.acknowledged_per_s / one.acknowledged_per_s:.2f}x, folded "
            f"{wide.folded_per_s / one.folded_per_s:.2f}x"
        )


def report_stages(wave: Wave) -> None:
    """Where one upload's time goes (the one-at-a-time wave), and the rate each stage alone allows."""
    spent = wave.seconds_per_upload
    request, folding = sum(spent[s] for s in REQUEST_STAGES), sum(spent[s] for s in FOLD_STAGES)
    bound = "request path" if request >= folding else "folder"
    print(
        f"\n{wave.scheme} at {wave.values:,} values, 1 at a time: where an upload's time goes "
        f"(the {bound} bounds it: {wave.values / max(request, folding) / 1e6:.2f} M values/s)"
    )
    print(f"{'stage':>12} {'ms/upload':>10} {'share':>6} {'ceiling Mvalues/s':>18}")
    for path, stages, total in (("request", REQUEST_STAGES, request), ("folder", FOLD_STAGES, folding)):
        for stage in stages:
            seconds = spent[stage]
            ceiling = f"{wave.values / seconds / 1e6:>18.1f}" if seconds > 0 else f"{'-':>18}"
            share = seconds / total if total > 0 else 0.0
            print(f"{stage:>12} {1000 * seconds:>10.1f} {share:>6.0%} {ceiling}")
        print(f"{path + ' total':>12} {1000 * total:>10.1f} {'':>6} {wave.values / total / 1e6:>18.1f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="150 k values, CKKS and plaintext, 1 and 8")
    parser.add_argument("--schemes", default=None, help="comma-separated: ckks, paillier, plain")
    parser.add_argument("--levels", default=None, help="comma-separated concurrencies (default 1,8,32,100)")
    parser.add_argument("--body", choices=("binary", "json"), default="binary")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    values = 149_506 if args.quick else 1_050_626
    schemes = (args.schemes or ("ckks,plain" if args.quick else "ckks,paillier,plain")).split(",")
    levels = [int(x) for x in (args.levels or ("1,8" if args.quick else "1,8,32,100")).split(",")]
    unknown = set(schemes) - SCHEMES.keys()
    if unknown:
        parser.error(f"--schemes: unknown {sorted(unknown)}; choose from {sorted(SCHEMES)}")
    waves: list[Wave] = []
    with tempfile.TemporaryDirectory(prefix="edge-ingest-") as tmp:
        for scheme in schemes:
            waves += await one_scheme(
                Path(tmp) / scheme, scheme, values, levels=levels, binary=args.body == "binary"
            )
    print(
        f"\nload average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores; "
        f"{args.body} bodies"
    )
    report_waves(waves)
    for scheme in schemes:
        report_stages(next(w for w in waves if w.scheme == scheme))
    if args.json is not None:
        rows = [
            asdict(w) | {"acknowledged_per_s": w.acknowledged_per_s, "folded_per_s": w.folded_per_s}
            for w in waves
        ]
        args.json.write_text(json.dumps({"load_average": os.getloadavg(), "waves": rows}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
