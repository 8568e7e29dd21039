"""One full round at production sizes, secure against plaintext over the same services: a cloud, 4 edges and
simulated hospitals, everything real (`redis-server`, the services as `python -m` processes on loopback,
the admin's enrolment tokens and signed challenges, real encryption under the federation's public key,
signed uploads over HTTP).

    .venv/bin/python bench/round_scale.py --quick                    # a small round, each scheme: minutes
    .venv/bin/python bench/round_scale.py --sizes 150k,1M --hospitals 10 --json out.json
    .venv/bin/python bench/round_scale.py --sizes 1M --hospitals 100 --schemes none,ckks

Packed Paillier costs a hospital about 100 CPU seconds at 1 M values (README), so a Paillier round of 100
hospitals at that size takes hours of encryption on a small machine before its timed part starts.

Each configuration (scheme, adapter size, hospitals) starts its own world (`bench/edge_load_world.py`) on a
base model written for the size (a BERT config with 4096-wide query and value, `layout_shape`), so that the
federation's adapter holds that many values. The hospitals are simulated: no training, each one's update a
seeded random vector of L2 norm 0.5 (within the clip norm), encrypted by the hospital's own key material
before the round in a pool of worker processes (`--workers`); a Paillier hospital fills its obfuscator pool
first (`HEScheme.precompute`, the part a real hospital does while it trains: "offline") and then encrypts
("online"). After the round starts each hospital signs its upload against its edge's plan, and the timed
part begins: every upload sent to its edge over `--connections` connections per edge, until the cloud
reports the round closed. `he.kind 'none'` (`PlainParams`) is the plaintext path: the same services, the
same signed uploads, float64 values in the clear. `paillier-auto` is packed Paillier compressed
(`FederationSpec.compression`): central Gaussian noise at z = 1 on the sum, the cloud choosing the fewest
quantisation bits that noise allows for the adapter's size, the hospitals rounding at random to them
(`client_agent.update.contribution`, as every hospital's update goes through here); its `max err` carries
the noise the cloud adds (std z C / hospitals on the mean).

It prints, per configuration: the round's wall time (first upload sent to the round closed) and its ratio
to the plaintext round of the same size and cohort; bytes per value of one upload's ciphertext and of its
HTTP body, each against float32 (4 bytes a value); acknowledged uploads per second at each edge; the
cloud's decryption time and the edges' fold time (`fedlora_he_seconds`, scraped from the services'
/metrics); a hospital's encryption time, offline and online; the peak resident memory of the cloud, the
busiest edge and the hospital simulator (this process while it uploads; the encryption workers apart); and
the largest error of the published mean against the mean of the vectors sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from edge_load_world import (
    FID,
    Hospital,
    Memory,
    World,
    adapter_vector,
    enrol_hospitals,
    load_spec,
    round_outcome,
    signed_update,
    start_round,
    start_world,
)
from prometheus_client.parser import text_string_to_metric_families
from pydantic import TypeAdapter
from rich.console import Console
from rich.table import Table
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter
from transformers import BertConfig

from client_agent.update import contribution
from fedlora.launcher import Cluster, LaunchError
from protocol.crypto import CKKSParams, HEParams, PaillierParams, PlainParams, scheme_from_public
from protocol.messages import MAX_R, CentralDPConfig, Compression, FederationInfo, FederationSpec, RoundPlan
from protocol.upload_frame import UPLOAD_FRAME_MEDIA_TYPE, encode_upload
from services.identity import SigningKey

EDGES = 4
SIZES = {"20k": 20_000, "150k": 150_000, "1M": 1_000_000, "4M": 4_000_000}
SCHEMES = ("none", "paillier", "paillier-auto", "ckks")
UPDATE_NORM = 0.5  # each simulated update's L2 norm: inside central_dp.clip_norm (1.0), as a clipped delta is
CLIP_NORM = 1.0
AUTO_NOISE = 1.0  # paillier-auto: z of the cloud's Gaussian noise, which the bits are chosen against
RETRY_FOR_S = 300.0  # a hospital's patience with an edge that answers 429 or 503
MIB = 2**20


@dataclass(frozen=True)
class Config:
    scheme: str
    values: int  # the size asked for; the adapter's layout lands near it (`layout_shape`)
    hospitals: int

    def he(self) -> HEParams:
        """The scheme's parameters: Paillier at 16 bits a value with room in each slot for the whole
        cohort's sum (unmasked: the bench measures encryption and transport, not the masking protocol);
        CKKS at its default (N = 8192, two 60-bit primes); plaintext clipped as Paillier is."""
        if self.scheme.startswith("paillier"):  # paillier-auto: the cloud replaces the bits and the range
            return PaillierParams(key_bits=2048, quant_bits=16, clip=1.0, max_clients=max(2, self.hospitals))
        if self.scheme == "ckks":
            return CKKSParams()
        return PlainParams(clip=1.0)

    def spec(self, spec: FederationSpec) -> FederationSpec:
        """`spec` with this scheme's privacy: paillier-auto compresses against central noise at z =
        `AUTO_NOISE`; the others as `load_spec` makes them (no noise: the published mean is exact)."""
        if self.scheme != "paillier-auto":
            return spec
        dp = CentralDPConfig(noise_multiplier=AUTO_NOISE, clip_norm=CLIP_NORM)
        return FederationSpec.model_validate(
            spec.model_dump() | {"central_dp": dp, "compression": Compression()}
        )


def layout_shape(values: int) -> tuple[int, int, int]:
    """(hidden size, layers, rank) of a BERT whose query and value LoRA `B` hold about `values` values:
    `2 * hidden * rank` a layer, rank 16 (a Llama-class adapter) where the size allows, 4096 wide from
    100 k values up. The classifier head adds `2 * hidden + 2`."""
    hidden = 4096 if values >= 100_000 else 256
    rank = 16
    layers = max(1, round(values / (2 * hidden * rank)))
    if layers == 1:
        rank = max(1, min(MAX_R, round(values / (2 * hidden))))
    return hidden, layers, rank


def write_model(folder: Path, values: int) -> tuple[Path, tuple[int, ...], int]:
    """A base model folder holding only the config the cloud reads its layout from (no weights: nobody
    trains), the layers to adapt and the rank."""
    hidden, layers, rank = layout_shape(values)
    model = folder / "model"
    BertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 128),
        intermediate_size=4 * hidden,
    ).save_pretrained(model)
    return model, tuple(range(layers)), rank


def update_vector(seed: int, index: int, size: int) -> np.ndarray:
    """Hospital `index`'s update: seeded (a benchmark's data, not a privacy draw), L2 norm `UPDATE_NORM`."""
    vector = np.random.default_rng([seed, index]).standard_normal(size)
    return vector * (UPDATE_NORM / np.linalg.norm(vector))


# -- the hospitals' encryption, in worker processes -------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(params_json: str, public: bytes) -> None:
    # One core per simulated hospital: the scheme's own precomputation then runs in this process (it
    # spreads over the cores it may use), and the CPU seconds measured here are all it cost.
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[os.getpid() % len(cores)]})
    _WORKER["scheme"] = scheme_from_public(TypeAdapter(HEParams).validate_json(params_json), public)


def _encrypt_one(seed: int, index: int, size: int, path: str) -> tuple[float, float, int, int]:
    """Hospital `index` encrypts its update to `path`: (offline CPU s, online CPU s, ciphertext bytes, this
    worker's peak RSS in bytes). CPU time, not wall: it is what one hospital's core pays, whatever else the
    shared machine runs."""
    scheme = _WORKER["scheme"]
    vector = update_vector(seed, index, size)
    began = time.process_time()
    scheme.precompute(size)
    offline = time.process_time() - began
    began = time.process_time()
    # Clipped (a no-op at UPDATE_NORM) and, where the spec asks, rounded at random, as the agent does.
    data = scheme.serialize(scheme.encrypt(contribution(scheme, vector, weight=1.0, clip_norm=CLIP_NORM)))
    online = time.process_time() - began
    Path(path).write_bytes(data)
    return offline, online, len(data), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def encrypt_all(
    world: World, info: FederationInfo, folder: Path, *, count: int, seed: int, workers: int
) -> dict[str, Any]:
    """`count` hospitals' ciphertexts on disk (`folder/<index>.ct`), with the costs a hospital paid."""
    public = (await world.admin.get(f"/federations/{FID}/public-context")).content
    spec = info.spec
    size = info.layout_size
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(
        max_workers=workers,
        initializer=_worker_init,
        initargs=(spec.he.model_dump_json(), public),
    ) as pool:
        costs = await asyncio.gather(
            *(
                loop.run_in_executor(pool, _encrypt_one, seed, i, size, str(folder / f"{i}.ct"))
                for i in range(count)
            )
        )
    offline, online, sizes, rss = zip(*costs, strict=True)
    return {
        "offline_s": float(np.mean(offline)),
        "online_s": float(np.mean(online)),
        "ciphertext_bytes": max(sizes),
        "encrypt_worker_rss": max(rss),
    }


# -- the timed round --------------------------------------------------------------------------------------


class TransientAnswerError(Exception):
    """No answer, 429 or 503: a hospital sends the same bytes again."""


@dataclass
class EdgeTally:
    first_sent: float = float("inf")
    last_acknowledged: float = 0.0
    acknowledged: int = 0
    refused: dict[str, int] = field(default_factory=dict)


async def post_upload(client: httpx.AsyncClient, body: bytes, cluster: Cluster) -> httpx.Response:
    """POST `body` until the edge answers other than transiently, for at most `RETRY_FOR_S`; a
    `LaunchError` at once if a service has died (`Cluster.check`), which no retry brings back."""
    retrying = AsyncRetrying(
        stop=stop_after_delay(RETRY_FOR_S),
        wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
        retry=retry_if_exception_type(TransientAnswerError),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            cluster.check()
            try:
                response = await client.post(
                    f"/federations/{FID}/rounds/0/uploads",
                    content=body,
                    headers={"Content-Type": UPLOAD_FRAME_MEDIA_TYPE},
                )
            except httpx.TransportError as e:
                raise TransientAnswerError(type(e).__name__) from e
            if response.status_code in (429, 503):
                raise TransientAnswerError(str(response.status_code))
            return response
    raise AssertionError("unreachable: tenacity re-raises")  # pragma: no cover


async def upload_all(
    world: World, bodies: dict[str, list[Path]], *, connections: int
) -> dict[str, EdgeTally]:
    """Each edge's hospitals send their signed uploads (read from disk as sent) over `connections`
    connections to that edge, all edges at once."""
    tallies = {edge_id: EdgeTally() for edge_id in bodies}
    timeout = httpx.Timeout(connect=10.0, read=600.0, write=600.0, pool=None)

    async def edge_load(url: str, edge_id: str) -> None:
        tally = tallies[edge_id]
        queue = list(bodies[edge_id])
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:

            async def worker() -> None:
                while queue:
                    body = await asyncio.to_thread(queue.pop().read_bytes)
                    tally.first_sent = min(tally.first_sent, time.monotonic())
                    response = await post_upload(client, body, world.cluster)
                    del body
                    if response.status_code == 202:
                        tally.acknowledged += 1
                        tally.last_acknowledged = time.monotonic()
                    else:
                        reason = f"{response.status_code} {response.json().get('code', '?')}"
                        tally.refused[reason] = tally.refused.get(reason, 0) + 1

            await asyncio.gather(*(worker() for _ in range(connections)))

    await asyncio.gather(*(edge_load(edge.url, edge.edge_id) for edge in world.edges))
    return tallies


def _sign_one(hospital: tuple[str, bytes, int, str], view_json: str, folder: str, index: int) -> int:
    """Hospital `index` signs its upload against its edge's plan, in place of its ciphertext on disk; the
    body's bytes. In a worker process, so that the sender's memory is the sending's alone."""
    client_id, key, kind, edge_id = hospital
    ciphertext = Path(folder) / f"{index}.ct"
    body = encode_upload(
        signed_update(
            Hospital(client_id, SigningKey.from_bytes(key), kind, edge_id),
            RoundPlan.model_validate_json(view_json),
            ciphertext.read_bytes(),
        )
    )
    (Path(folder) / f"{index}.frame").write_bytes(body)
    ciphertext.unlink()
    return len(body)


async def sign_all(
    hospitals: list[Hospital], plan: RoundPlan, folder: Path, *, workers: int
) -> tuple[dict[str, list[Path]], int]:
    """Each hospital's signed upload against its edge's view of the plan, on disk in place of its
    ciphertext; the bodies by edge, and the largest body's bytes."""
    views = {edge_id: plan.view(edge_id).model_dump_json() for edge_id in {h.edge_id for h in hospitals}}
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        sizes = await asyncio.gather(
            *(
                loop.run_in_executor(
                    pool,
                    _sign_one,
                    (h.client_id, h.key.private_bytes(), h.kind, h.edge_id),
                    views[h.edge_id],
                    str(folder),
                    index,
                )
                for index, h in enumerate(hospitals)
            )
        )
    bodies: dict[str, list[Path]] = {edge_id: [] for edge_id in views}
    for index, h in enumerate(hospitals):
        bodies[h.edge_id].append(folder / f"{index}.frame")
    return bodies, max(sizes)


async def he_seconds(url: str, operation: str) -> float:
    """Seconds a service spent in `operation` so far (`fedlora_he_seconds_sum`, from its /metrics)."""
    async with httpx.AsyncClient(timeout=30) as client:
        text = (await client.get(f"{url}/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "fedlora_he_seconds"
        for sample in family.samples
        if sample.name.endswith("_sum") and sample.labels.get("operation") == operation
    )


def expected_mean(seed: int, hospitals: int, size: int) -> np.ndarray:
    total = np.zeros(size)
    for index in range(hospitals):
        total += update_vector(seed, index, size)
    return total / hospitals


async def run_config(config: Config, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One round of `config` in a world of its own; its figures."""
    model, layers, rank = write_model(folder, config.values)
    spec = config.spec(
        load_spec(
            deadline_s=args.deadline_s,
            he=config.he(),
            target_modules=("query", "value"),
            layers=layers,
            r_max=rank,
        )
    )
    world = await start_world(folder, model_path=model, spec=spec, edges=EDGES, max_body_bytes=None)
    try:
        hospitals = await enrol_hospitals(world, config.hospitals, concurrency=args.enrol_concurrency)
        info = FederationInfo.model_validate_json((await world.admin.get(f"/federations/{FID}")).content)
        uploads = folder / "uploads"
        uploads.mkdir()
        costs = await encrypt_all(
            world, info, uploads, count=config.hospitals, seed=args.seed, workers=args.workers
        )
        _, plan = await start_round(world)
        bodies, body_bytes = await sign_all(hospitals, plan, uploads, workers=args.workers)
        memory = Memory()
        stop = asyncio.Event()
        pids = [world.cloud.popen.pid, os.getpid(), *(edge.pid for edge in world.edges)]
        sampler = asyncio.create_task(memory.sample(lambda: pids, stop))
        began = time.monotonic()
        tallies = await upload_all(world, bodies, connections=args.connections)
        status = await round_outcome(world, timeout_s=args.deadline_s + 120, interval_s=0.05)
        wall_s = time.monotonic() - began
        stop.set()
        await sampler
        decrypt_s = await he_seconds(world.cloud_url, "decrypt")
        fold_s = [await he_seconds(edge.url, "add") for edge in world.edges]
        error = float("nan")
        if status.state.value == "closed" and status.adapter_version_out is not None:
            before = await adapter_vector(world, status.adapter_version_in)
            after = await adapter_vector(world, status.adapter_version_out)
            want = expected_mean(args.seed, config.hospitals, info.layout_size)
            error = float(np.abs((after.astype(np.float64) - before) - want).max())
    finally:
        await world.close()
    rates = [t.acknowledged / max(t.last_acknowledged - t.first_sent, 1e-9) for t in tallies.values()]
    return {
        "scheme": config.scheme,
        "values": info.layout_size,
        "hospitals": config.hospitals,
        "round_state": status.state.value,
        "clients_contributed": status.clients_contributed,
        "acknowledged": sum(t.acknowledged for t in tallies.values()),
        "refused": {r: n for t in tallies.values() for r, n in t.refused.items()},
        "wall_s": round(wall_s, 2),
        "quant_bits": info.spec.he.quant_bits if isinstance(info.spec.he, PaillierParams) else None,
        "slots": info.spec.he.slots if isinstance(info.spec.he, PaillierParams | CKKSParams) else None,
        "ciphertext_bytes_per_value": round(costs["ciphertext_bytes"] / info.layout_size, 3),
        "body_bytes_per_value": round(body_bytes / info.layout_size, 3),
        "uploads_per_s_per_edge": [round(r, 2) for r in rates],
        "cloud_decrypt_s": round(decrypt_s, 3),
        "edge_fold_s": [round(s, 3) for s in fold_s],
        "hospital_offline_s": round(costs["offline_s"], 3),
        "hospital_online_s": round(costs["online_s"], 3),
        "cloud_peak_rss_mb": round(memory.peak.get(pids[0], 0) / MIB, 1),
        "simulator_peak_rss_mb": round(memory.peak.get(pids[1], 0) / MIB, 1),
        "edge_peak_rss_mb": [round(memory.peak.get(pid, 0) / MIB, 1) for pid in pids[2:]],
        "encrypt_worker_peak_rss_mb": round(costs["encrypt_worker_rss"] / MIB, 1),
        "max_abs_error": error,
    }


def with_ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each secure round's wall time against the plaintext round of the same size and cohort."""
    plain = {(r["values"], r["hospitals"]): r["wall_s"] for r in results if r["scheme"] == "none"}
    for r in results:
        base = plain.get((r["values"], r["hospitals"]))
        r["wall_vs_plain"] = round(r["wall_s"] / base, 3) if base else None
    return results


def report(console: Console, results: list[dict[str, Any]]) -> None:
    """Two tables, one row per round: time, then bytes and memory."""
    title = f"One round, {EDGES} edges: secure against plaintext (he.kind 'none')"
    timing = Table(title=f"{title}: time")
    sizes = Table(title=f"{title}: bytes and memory")
    for table, names in (
        (
            timing,
            (
                "scheme",
                "values",
                "hosp.",
                "round s",
                "x plain",
                "uploads/s/edge",
                "decrypt s",
                "fold s",
                "enc. s off / on",
                "load",
            ),
        ),
        (
            sizes,
            (
                "scheme",
                "values",
                "hosp.",
                "bits",
                "slots/ct",
                "ct B/value",
                "x f32",
                "body B/value",
                "x f32",
                "RSS MB cloud",
                "edge",
                "sim.",
                "enc.",
                "max err",
            ),
        ),
    ):
        for name in names:
            table.add_column(name, justify="left" if name == "scheme" else "right")
    for r in results:
        rates = r["uploads_per_s_per_edge"]
        row = (r["scheme"], f"{r['values']:,}", str(r["hospitals"]))
        timing.add_row(
            *row,
            f"{r['wall_s']:.1f}",
            "-" if r["wall_vs_plain"] is None else f"{r['wall_vs_plain']:.2f}",
            f"{min(rates):.1f}-{max(rates):.1f}",
            f"{r['cloud_decrypt_s']:.2f}",
            f"{max(r['edge_fold_s']):.2f}",
            f"{r['hospital_offline_s']:.2f} / {r['hospital_online_s']:.2f}",
            r["load_average"],
        )
        sizes.add_row(
            *row,
            "-" if r.get("quant_bits") is None else str(r["quant_bits"]),
            "-" if r.get("slots") is None else str(r["slots"]),
            f"{r['ciphertext_bytes_per_value']:.2f}",
            f"{r['ciphertext_bytes_per_value'] / 4:.2f}",
            f"{r['body_bytes_per_value']:.2f}",
            f"{r['body_bytes_per_value'] / 4:.2f}",
            f"{r['cloud_peak_rss_mb']:.0f}",
            f"{max(r['edge_peak_rss_mb']):.0f}",
            f"{r['simulator_peak_rss_mb']:.0f}",
            f"{r['encrypt_worker_peak_rss_mb']:.0f}",
            f"{r['max_abs_error']:.1e}",
        )
    console.print(timing)
    console.print(
        "round s: first upload sent to the round closed at the cloud; x plain: against the plaintext round "
        "of the same size and cohort; uploads/s/edge: acknowledged uploads over each edge's sending time, "
        "slowest-fastest edge; decrypt s: the cloud's; fold s: the busiest edge's homomorphic adds; enc. s: "
        "CPU seconds one hospital spends encrypting, offline (obfuscators, while it trains) and online; "
        "load: load averages (1, 5, 15 min) as the round ended, on 2 cores."
    )
    console.print(sizes)
    console.print(
        "bits: packed Paillier's quantisation bits (paillier-auto: chosen by the cloud for the noise); "
        "slots/ct: values per ciphertext; ct: one upload's ciphertext; body: its signed HTTP body (the binary upload frame hospitals send); x f32: "
        "against 4 bytes a value; RSS: peak resident memory during the round (edge: the busiest; sim.: the "
        "process sending the uploads; enc.: one encryption worker); max err: the published mean against "
        "the mean of the vectors sent (paillier-auto: with the cloud's noise on it)."
    )


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    console = Console(width=max(Console().width, 150))
    results = []
    for size in args.sizes:
        for hospitals in args.hospitals:
            for scheme in args.schemes:
                config = Config(scheme, SIZES[size], hospitals)
                console.print(f"[bold]{scheme}[/bold], {size} values, {hospitals} hospitals ...")
                with tempfile.TemporaryDirectory(prefix="round-scale-") as scratch:
                    folder = (args.keep / f"{scheme}-{size}-{hospitals}") if args.keep else Path(scratch)
                    folder.mkdir(parents=True, exist_ok=True)
                    try:
                        result = await run_config(config, folder, args)
                    except (LaunchError, TransientAnswerError, httpx.HTTPError, OSError) as e:
                        # A configuration past what the machine holds (a service killed for memory, a full
                        # disk) is a result too: it is reported, and the run goes on to the next one.
                        result = {
                            **asdict(config),
                            "round_state": "error",
                            "error": f"{type(e).__name__}: {e}",
                        }
                result["load_average"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
                if "error" in result:
                    console.print(f"  [red]{result['error']}[/red] (load {result['load_average']})")
                else:
                    console.print(
                        f"  {result['round_state']}, {result['acknowledged']} acknowledged, "
                        f"{result['wall_s']} s (load {result['load_average']})"
                    )
                results.append(result)
    done = with_ratios([r for r in results if "error" not in r])
    report(console, done)
    for r in results:
        if "error" in r:
            console.print(f"{r['scheme']}, {r['values']:,} values, {r['hospitals']} hospitals: {r['error']}")
    return results


def _listed(choices: Any) -> Any:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {list(choices)}, got {text!r}"
            )
        return items

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 k values, 10 hospitals")
    parser.add_argument("--sizes", type=_listed(SIZES), default=["150k", "1M"], help=f"of {list(SIZES)}")
    parser.add_argument("--hospitals", type=lambda t: [int(x) for x in t.split(",")], default=[10])
    parser.add_argument("--schemes", type=_listed(SCHEMES), default=list(SCHEMES), help=f"of {list(SCHEMES)}")
    parser.add_argument("--connections", type=int, default=4, help="concurrent uploads to each edge")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encryption processes")
    parser.add_argument("--enrol-concurrency", type=int, default=16)
    parser.add_argument("--deadline-s", type=float, default=3600.0, help="the round's upload deadline")
    parser.add_argument("--seed", type=int, default=22, help="the simulated updates (not any key or mask)")
    parser.add_argument("--keep", type=Path, default=None, help="a folder for the logs and stores, kept")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.hospitals = ["20k"], [10]
    if min(args.hospitals) < 2 * EDGES:
        parser.error(
            f"--hospitals: at least {2 * EDGES}, two per edge (min_clients_per_edge), got {args.hospitals}"
        )
    results = asyncio.run(main_async(args))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    failed = [r for r in results if r["round_state"] != "closed" or r.get("acknowledged") != r["hospitals"]]
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
