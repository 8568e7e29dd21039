"""A load and fault test of one edge: a thousand hospitals upload to it at 100 concurrent connections, with
malformed, oversized, replayed and unauthenticated uploads mixed in, and the edge is killed (SIGKILL) once
in the middle and restarted on its store. Every upload the edge acknowledged (202) must be in the sum it
hands to the cloud, and its memory must stay bounded.

    .venv/bin/python bench/edge_load.py                        # 1,000 hospitals, 100 connections
    .venv/bin/python bench/edge_load.py --hospitals 200 --connections 50 --json out.json

Everything is real: `redis-server`, the cloud and the edge as `python -m` processes on loopback (the edge
and the cloud on Redis, the edge's key on disk), hospitals enrolled with the admin's enrolment tokens and
signed challenges, CKKS ciphertexts under the federation's public key (`bench/edge_load_world.py`). The
hospitals talk to the edge through its public API only, with httpx (one pool of `--connections`); a
hospital sends the same bytes again after a connection error, a 429, a 503 or any answer with
`Retry-After`, as an agent would, and only a 202 counts as acknowledged.

What is checked, independently of the edge: the set of acknowledged upload ids (client and nonce) the run
kept against the cloud's record of who contributed to the round (each hospital's `rounds_contributed`,
counted from the manifest the edge signed), and the round's decrypted mean against the kinds of ciphertext
those hospitals sent (`edge_load_world.KINDS`): **lost** counts acknowledged uploads missing from either,
**counted twice** uploads the sum holds more often than the manifest names them. Both must be 0. An upload
whose answer the kill cut off may be in the sum without an acknowledgement (its retry is refused as a
replay): it is listed apart, as the hospital would see it.

It prints uploads per second (acknowledged uploads over the load phase, the kill included), p50 and p99
latency of the acknowledged requests, the edge's peak resident memory (sampled from /proc), refusals by
reason (status and code) and the count lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from edge_load_world import (
    CHEAPEST_CKKS,
    EDGE_ID,
    FID,
    KINDS,
    MAX_BODY_BYTES,
    ONE_HOT,
    Hospital,
    Memory,
    World,
    adapter_vector,
    encrypt_uploads,
    enrol_hospitals,
    load_spec,
    round_outcome,
    rss_bytes,
    signed_upload,
    start_round,
    start_world,
)
from rich.console import Console
from rich.table import Table
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from protocol.messages import RoundPlan, RoundStatus
from services.identity import SigningKey

UPLOADS = f"/federations/{FID}/rounds/0/uploads"
RETRY_FOR_S = 180.0  # a hospital's patience with an edge that does not answer
#: What each probe must be refused with. A replay near the round's end may meet it closed, or, once the
#: cloud has closed the federation's only round, the federation finished (410): refused either way.
EXPECTED = {
    "malformed": {"422 invalid_request"},
    "oversized": {"413 payload_too_large", "reset"},
    "unauthenticated": {"401 unauthenticated"},
    "bad signature": {"401 bad_signature"},
    "replayed": {"409 replay", "409 round_closed", "410 federation_not_active"},
    "duplicate": {"409 duplicate_upload", "409 round_closed", "410 federation_not_active"},
}


class RetryableAnswerError(Exception):
    """An answer a hospital retries: no answer, 429, 503 or `Retry-After`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Job:
    kind: str  # "upload" or a key of EXPECTED
    hospital: Hospital
    body: bytes


@dataclass
class Tally:
    """What the run saw: acknowledged uploads (client id -> nonce-bearing body), their latencies, every
    refusal by kind of request and reason, and transient answers by reason."""

    acknowledged: dict[str, bytes] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)
    transient: Counter[str] = field(default_factory=Counter)
    unanswered: set[str] = field(default_factory=set)  # valid uploads whose answer a connection error cut off
    last_ack_at: float = 0.0


def reason_of(response: httpx.Response) -> str:
    try:
        code = response.json().get("code", "?")
    except ValueError:
        code = "not-json"
    return f"{response.status_code} {code}"


async def send(client: httpx.AsyncClient, job: Job, tally: Tally) -> httpx.Response:
    """One request; a transient answer raises `RetryableAnswerError` after it is counted."""
    try:
        response = await client.post(UPLOADS, content=job.body, headers={"Content-Type": "application/json"})
    except httpx.TransportError as e:
        if job.kind == "oversized":  # the edge may close the connection on a body it refused unread
            raise ClosedUnreadError from e
        if job.kind == "upload":
            tally.unanswered.add(job.hospital.client_id)
        tally.transient[f"no answer ({type(e).__name__})"] += 1
        raise RetryableAnswerError("no answer") from e
    if response.status_code in (429, 503) or "Retry-After" in response.headers:
        tally.transient[reason_of(response)] += 1
        raise RetryableAnswerError(reason_of(response))
    return response


class ClosedUnreadError(Exception):
    """The edge closed the connection on a body it refused unread (an oversized one)."""


async def hospital_request(client: httpx.AsyncClient, job: Job, tally: Tally) -> str | None:
    """Send `job` until the edge answers for good; the reason of a refusal, None for a 202, "gave up" when
    the edge kept answering transiently for `RETRY_FOR_S`."""
    retrying = AsyncRetrying(
        stop=stop_after_delay(RETRY_FOR_S),
        wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
        retry=retry_if_exception_type(RetryableAnswerError),
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                began = time.monotonic()
                try:
                    response = await send(client, job, tally)
                except ClosedUnreadError:
                    return "reset"
                if response.status_code == 202:
                    tally.latencies_s.append(time.monotonic() - began)
                    return None
                return reason_of(response)
    except RetryableAnswerError as e:
        return f"gave up ({e.reason})"
    raise AssertionError("unreachable: tenacity re-raises")  # pragma: no cover


def probes(
    hospitals: list[Hospital], plan: RoundPlan, ciphertexts: dict[str, bytes], rng: random.Random
) -> list[Job]:
    """The bad requests mixed into the load, each about one in twenty hospitals: a truncated body, one past
    the edge's size limit, an upload signed with a key the cloud never enrolled, and one from an id nobody
    enrolled. Replays and duplicates follow acknowledgements (`run_load`)."""
    jobs = []
    for h in hospitals:
        ciphertext = ciphertexts[h.client_id]
        draw = rng.random()
        if draw < 0.05:
            jobs.append(Job("malformed", h, signed_upload(h, plan, ciphertext)[: 4096 + rng.randrange(4096)]))
        elif draw < 0.10:
            jobs.append(Job("oversized", h, b"{" + b" " * MAX_BODY_BYTES + b"}"))
        elif draw < 0.15:
            jobs.append(
                Job("bad signature", h, signed_upload(h, plan, ciphertext, key=SigningKey.generate()))
            )
        elif draw < 0.20:
            jobs.append(
                Job(
                    "unauthenticated",
                    h,
                    signed_upload(h, plan, ciphertext, client_id=f"intruder-{h.client_id}"),
                )
            )
    return jobs


async def run_load(
    world: World,
    jobs: list[Job],
    *,
    hospitals: int,
    connections: int,
    rng: random.Random,
    replay_share: float,
    plan: RoundPlan,
    ciphertexts: dict[str, bytes],
) -> tuple[Tally, float, float]:
    """Play `jobs` with `connections` workers over one pool of as many connections; kill the edge once half
    the hospitals are acknowledged and restart it. Returns the tally, the load phase's seconds and the
    seconds the edge was down."""
    tally = Tally()
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    half = asyncio.Event()
    down_s = 0.0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx.Timeout(connect=5.0, read=60.0, write=60.0, pool=None)
    async with httpx.AsyncClient(base_url=world.edge.url, limits=limits, timeout=timeout) as client:

        async def worker() -> None:
            while True:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                reason = await hospital_request(client, job, tally)
                if reason is not None:
                    tally.refusals[(job.kind, reason)] += 1
                    continue
                if job.kind != "upload":
                    tally.refusals[(job.kind, "202 accepted")] += (
                        1  # a probe the edge took: the report fails it
                    )
                    continue
                tally.acknowledged[job.hospital.client_id] = job.body
                tally.last_ack_at = time.monotonic()
                if len(tally.acknowledged) >= hospitals // 2:
                    half.set()
                if rng.random() < replay_share:
                    h = job.hospital
                    queue.put_nowait(Job("replayed", h, job.body))
                    queue.put_nowait(Job("duplicate", h, signed_upload(h, plan, ciphertexts[h.client_id])))

        async def killer() -> None:
            nonlocal down_s
            await half.wait()
            began = time.monotonic()
            world.edge.kill()
            await world.edge.restart()
            down_s = time.monotonic() - began

        began = time.monotonic()
        kill = asyncio.create_task(killer())
        # Workers that find the queue empty end; replays queued later are taken by those still running.
        await asyncio.gather(*(worker() for _ in range(connections)))
        while not queue.empty():
            await asyncio.gather(*(worker() for _ in range(min(connections, queue.qsize()))))
        await kill
    return tally, tally.last_ack_at - began, down_s


async def audit(world: World, status: RoundStatus, tally: Tally, hospitals: list[Hospital]) -> dict[str, Any]:
    """Compare what the edge acknowledged with what reached the cloud: the hospitals the cloud counted for
    the round (from the edge's manifest) and, per kind, the round's decrypted mean times their number."""
    clients = (await world.admin.get(f"/federations/{FID}/clients")).json()
    in_manifest = {c["client_id"] for c in clients if c["rounds_contributed"] >= 1}
    kind_of = {h.client_id: h.kind for h in hospitals}
    counted_by_manifest = np.bincount([kind_of[c] for c in in_manifest], minlength=KINDS)
    decrypted = np.zeros(KINDS)
    if status.state.value == "closed" and status.adapter_version_out is not None:
        before = await adapter_vector(world, status.adapter_version_in)
        after = await adapter_vector(world, status.adapter_version_out)
        decrypted = (after - before)[:KINDS].astype(np.float64) * status.clients_contributed / ONE_HOT
    in_sum = np.rint(decrypted).astype(int)
    acknowledged = set(tally.acknowledged)
    missing_from_manifest = acknowledged - in_manifest
    acked_by_kind = np.bincount([kind_of[c] for c in acknowledged], minlength=KINDS)
    missing_from_sum = int(np.clip(acked_by_kind - in_sum, 0, None).sum())
    return {
        "round_state": status.state.value,
        "clients_contributed": status.clients_contributed,
        "in_manifest": len(in_manifest),
        "in_sum": int(in_sum.sum()),
        "largest_rounding": float(np.abs(decrypted - in_sum).max()),
        "lost": max(len(missing_from_manifest), missing_from_sum),
        "counted_twice": int(np.clip(in_sum - counted_by_manifest, 0, None).sum()),
        "in_sum_unacknowledged": sorted(in_manifest - acknowledged),
    }


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="edge-load-") as scratch:
        folder = args.keep or Path(scratch)
        world = await start_world(
            folder, model_path=args.model_path, spec=load_spec(deadline_s=args.deadline_s)
        )
        try:
            began = time.monotonic()
            hospitals = await enrol_hospitals(world, args.hospitals, concurrency=args.enrol_concurrency)
            enrol_s = time.monotonic() - began
            info, whole_plan = await start_round(world)
            plan = whole_plan.view(EDGE_ID)
            ciphertexts = await encrypt_uploads(world, info, hospitals)
            jobs = [Job("upload", h, signed_upload(h, plan, ciphertexts[h.client_id])) for h in hospitals]
            jobs += probes(hospitals, plan, ciphertexts, rng)
            rng.shuffle(jobs)
            idle_rss = rss_bytes(world.edge.pid) or 0
            memory = Memory()
            stop = asyncio.Event()
            sampler = asyncio.create_task(memory.sample(lambda: [world.edge.pid], stop))
            tally, load_s, down_s = await run_load(
                world,
                jobs,
                hospitals=args.hospitals,
                connections=args.connections,
                rng=rng,
                replay_share=0.1,
                plan=plan,
                ciphertexts=ciphertexts,
            )
            status = await round_outcome(world, timeout_s=args.deadline_s + 120)
            stop.set()
            await sampler
            result = await audit(world, status, tally, hospitals)
        finally:
            await world.close()
    wrong_probes = {
        f"{kind}: {reason}": n
        for (kind, reason), n in tally.refusals.items()
        if kind != "upload" and reason not in EXPECTED[kind]
    }
    result |= {
        "hospitals": args.hospitals,
        "connections": args.connections,
        "scheme": f"CKKS N={CHEAPEST_CKKS.poly_modulus_degree}, "
        f"coeff_mod_bit_sizes {CHEAPEST_CKKS.coeff_mod_bit_sizes}",
        "upload_bytes": max(len(j.body) for j in jobs if j.kind == "upload"),
        "enrol_s": round(enrol_s, 2),
        "acknowledged": len(tally.acknowledged),
        "load_s": round(load_s, 2),
        "edge_down_s": round(down_s, 2),
        "uploads_per_s": round(len(tally.acknowledged) / load_s, 1),
        "p50_ms": round(percentile_ms(tally.latencies_s, 50), 1),
        "p99_ms": round(percentile_ms(tally.latencies_s, 99), 1),
        "edge_idle_rss_mb": round(idle_rss / 2**20, 1),
        "edge_peak_rss_mb": round(max(memory.peak.values(), default=0) / 2**20, 1),
        "edge_peak_rss_by_process_mb": [round(v / 2**20, 1) for v in memory.peak.values()],
        "refusals": {f"{kind}: {reason}": n for (kind, reason), n in sorted(tally.refusals.items())},
        "transient": dict(tally.transient),
        "wrong_probe_answers": wrong_probes,
        "valid_refused": {f"{reason}": n for (kind, reason), n in tally.refusals.items() if kind == "upload"},
        "unanswered_after_kill": len(tally.unanswered),
    }
    report(console, result)
    return result


def report(console: Console, result: dict[str, Any]) -> None:
    table = Table(
        title=f"One edge under load: {result['hospitals']} hospitals, {result['connections']} connections, one SIGKILL"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("scheme", result["scheme"]),
        ("upload size", f"{result['upload_bytes'] / 1e3:.0f} kB"),
        ("enrolment", f"{result['enrol_s']:.1f} s"),
        ("acknowledged (202)", str(result["acknowledged"])),
        ("uploads/s (load phase, kill included)", f"{result['uploads_per_s']:.1f}"),
        ("load phase / edge down", f"{result['load_s']:.1f} s / {result['edge_down_s']:.1f} s"),
        ("latency p50 / p99 (202s)", f"{result['p50_ms']:.0f} ms / {result['p99_ms']:.0f} ms"),
        (
            "edge RSS idle / peak",
            f"{result['edge_idle_rss_mb']:.0f} MB / {result['edge_peak_rss_mb']:.0f} MB",
        ),
        ("round", f"{result['round_state']}, {result['clients_contributed']} hospitals in the sum"),
        ("in the sum, not acknowledged (answer cut by the kill)", str(len(result["in_sum_unacknowledged"]))),
        ("counted twice", str(result["counted_twice"])),
        ("lost (acknowledged, not in the sum)", str(result["lost"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    refusals = Table(title="Answers other than 202, by request and reason")
    refusals.add_column("request")
    refusals.add_column("status code")
    refusals.add_column("count", justify="right")
    for name, n in result["refusals"].items():
        kind, reason = name.split(": ", 1)
        refusals.add_row(kind, reason, str(n))
    for reason, n in sorted(result["transient"].items()):
        refusals.add_row("(retried)", reason, str(n))
    console.print(refusals)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hospitals", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=100, help="concurrent connections to the edge")
    parser.add_argument("--enrol-concurrency", type=int, default=16)
    parser.add_argument("--deadline-s", type=float, default=900.0, help="the round's upload deadline")
    parser.add_argument(
        "--model-path", type=Path, default=None, help="the cloud's base model (default: MiniLM)"
    )
    parser.add_argument("--seed", type=int, default=21, help="which requests are probes (not the keys)")
    parser.add_argument("--keep", type=Path, default=None, help="a folder for the logs and stores, kept")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    failed = (
        result["lost"]
        or result["counted_twice"]
        or result["wrong_probe_answers"]
        or result["round_state"] != "closed"
    )
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
