"""`make deploy-test`: deploy/compose.yaml in containers (podman-compose), one clean round, then a round in
which one edge and its Redis are killed with SIGKILL mid-round and started again; the round must complete
with every upload a hospital saw acknowledged counted by the cloud. Everything is torn down at the end,
also on failure (`--keep` leaves it up for a look).

podman-compose 1.0.3 (Debian 12) starts services in dependency order but does not wait on
`depends_on: condition:` (service_healthy, service_completed_successfully), and podman runs health checks
from systemd timers, which these machines lack. So the drill brings the stack up stage by stage, each with
`podman-compose up -d --no-deps SERVICE...`, and waits itself: a one-shot for its exit code 0, a server for
`podman healthcheck run` to pass (the compose file's own health check). The admin's commands are
`fedlora admin ... --json` from the host's virtual environment, over the published port 8700 with the
federation's CA read from the volume pki-public.

Exit status 0 when both rounds completed and nothing acknowledged was lost; 1 otherwise; 2 when podman is
not usable here (the reason is printed).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
PROJECT = "fedlora-drill"
FEDERATION = "staging"
HOSPITALS = ("hospital-a", "hospital-b")
FAULTED = ("edge-north", "redis-edge-north")
# Per hospital: above what the spec's DP needs for a public example count over its batch size.
NOTES = 120
CONTAINERS_CONF = DEPLOY / "podman" / "containers.conf"


class DrillError(RuntimeError):
    """A stage did not reach its state in time; the message names the service and what was awaited."""


@dataclass
class Drill:
    """One drill's working folder, secrets and timings."""

    work: Path
    image: str
    redis_image: str
    env: dict[str, str] = field(default_factory=dict)
    timings: list[tuple[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    # -- commands --------------------------------------------------------------------------------------
    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["podman-compose", "-p", PROJECT, "-f", str(DEPLOY / "compose.yaml"), *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise DrillError(f"{' '.join(command[5:])} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise DrillError(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    def admin(self, *args: str) -> Any:
        """`fedlora admin ARGS --json` against the published cloud; its JSON answer."""
        fedlora = Path(sys.executable).with_name("fedlora")
        done = subprocess.run(
            [str(fedlora), "admin", *args, "--json"], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise DrillError(f"fedlora admin {' '.join(args)} failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")
        return json.loads(done.stdout)

    @staticmethod
    def container(service: str) -> str:
        return f"{PROJECT}_{service}_1"

    # -- waiting -----------------------------------------------------------------------------------------
    def until(self, what: str, predicate: Callable[[], bool], *, timeout_s: float, every_s: float = 1.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise DrillError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(every_s)  # polling containers that run on their own clock, with a bound

    def exited_ok(self, service: str, *, timeout_s: float = 300) -> None:
        def done() -> bool:
            state = self.podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.container(service))
            status, code = state.stdout.split()
            if status == "exited" and code != "0":
                logs = self.podman("logs", "--tail", "30", self.container(service), check=False)
                raise DrillError(f"{service} exited {code}:\n{logs.stdout}{logs.stderr}")
            return status == "exited"

        self.until(f"{service} to finish", done, timeout_s=timeout_s)

    def healthy(self, *services: str, timeout_s: float = 300) -> None:
        for service in services:
            self.until(
                f"{service} to be healthy",
                lambda s=service: self.podman("healthcheck", "run", self.container(s), check=False).returncode == 0,
                timeout_s=timeout_s,
                every_s=2.0,
            )

    @contextmanager
    def timed(self, what: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        self.timings.append((what, time.monotonic() - start))
        print(f"  {what}: {time.monotonic() - start:.0f} s", flush=True)

    def acknowledged(self, round_: int) -> dict[str, int]:
        """Per hospital, the uploads of `round_` its agent logged as held by its edge ("uploaded")."""
        counts = {}
        for hospital in HOSPITALS:
            logs = self.podman("logs", self.container(hospital), check=False)
            counts[hospital] = sum(
                1
                for line in (logs.stdout + logs.stderr).splitlines()
                if line.startswith("{") and _is_upload(line, round_)
            )
        return counts

    def round_status(self, round_: int) -> dict[str, Any]:
        status: dict[str, Any] = self.admin("round", "-f", FEDERATION, str(round_))
        return status


def _is_upload(line: str, round_: int) -> bool:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False
    return bool(record.get("msg") == "uploaded" and record.get("round") == round_)


def write_inputs(work: Path) -> tuple[Path, dict[str, Path]]:
    """The drill's federation (deploy/federation.yaml with few local steps and short deadlines) and each
    hospital's train.csv, readable by the image's user."""
    spec = yaml.safe_load((DEPLOY / "federation.yaml").read_text())
    spec.update(
        rounds=3,
        training={"local_steps": 3, "batch_size": 16, "max_seq_length": 32},
        round_deadline_s=420.0,
        upload_deadline_s=360.0,
    )
    spec_file = work / "federation.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    data = {}
    good, bad = "good great excellent fine recovery", "bad awful terrible poor relapse"
    for index, hospital in enumerate(HOSPITALS):
        folder = work / "data" / hospital
        folder.mkdir(parents=True)
        with (folder / "train.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for i in range(NOTES):
                label = (i + index) % 2
                writer.writerow([f"{good if label else bad} note {i}", label])
        data[hospital] = folder
    for path in [work, *work.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return spec_file, data


def podman_unusable() -> str | None:
    """Why podman cannot run the drill here, or None."""
    for program in ("podman", "podman-compose"):
        if shutil.which(program) is None:
            return f"{program} is not installed (make image installs Debian's podman, runc and podman-compose)"
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}
    info = subprocess.run(["podman", "info"], env=env, capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return f"podman info failed: {info.stderr.strip()[-500:]}"
    return None


def bring_up(drill: Drill) -> None:
    print("== up, stage by stage (podman-compose 1.0.3 does not wait on depends_on conditions)", flush=True)
    with drill.timed("store-users, pki (one-shots)"):
        drill.compose("up", "-d", "--no-deps", "store-users")
        drill.exited_ok("store-users")
        drill.compose("up", "-d", "--no-deps", "pki")
        drill.exited_ok("pki")
    with drill.timed("redis-cloud, redis-edge-north, redis-edge-south healthy"):
        redises = ("redis-cloud", "redis-edge-north", "redis-edge-south")
        drill.compose("up", "-d", "--no-deps", *redises)
        drill.healthy(*redises)
    with drill.timed("cloud healthy"):
        drill.compose("up", "-d", "--no-deps", "cloud")
        drill.healthy("cloud")
    with drill.timed("bootstrap (federation created, tokens issued)"):
        drill.compose("up", "-d", "--no-deps", "bootstrap")
        drill.exited_ok("bootstrap")
    with drill.timed("edge-north, edge-south enrolled and healthy"):
        drill.compose("up", "-d", "--no-deps", "edge-north", "edge-south")
        drill.healthy("edge-north", "edge-south")
    ca = drill.podman("volume", "inspect", "--format", "{{.Mountpoint}}", f"{PROJECT}_pki-public").stdout.strip()
    shutil.copy(Path(ca) / "ca.crt", drill.work / "ca.crt")
    drill.env |= {
        "FEDLORA_CLOUD_URL": "https://127.0.0.1:8700",
        "FEDLORA_TLS_CA_FILE": str(drill.work / "ca.crt"),
    }
    with drill.timed("hospitals enrolled"):
        drill.compose("up", "-d", "--no-deps", *HOSPITALS)
        drill.until(
            "both hospitals to enrol",
            lambda: len(drill.admin("clients", "-f", FEDERATION)["clients"]) == len(HOSPITALS),
            timeout_s=600,
            every_s=3.0,
        )


def clean_round(drill: Drill) -> dict[str, Any]:
    print("== round 0: no faults", flush=True)
    with drill.timed("round 0 (train, encrypt, upload, sum, decrypt)"):
        drill.admin("start", "-f", FEDERATION)
        drill.until("round 0 to close", lambda: drill.round_status(0)["state"] == "closed", timeout_s=900, every_s=3.0)
    status = drill.round_status(0)
    adapter = drill.work / "adapter-v1.zip"
    drill.admin("download", "-f", FEDERATION, "--version", str(status["adapter_version_out"]), "--out", str(adapter))
    ledger = drill.admin("ledger", "-f", FEDERATION)
    acks = drill.acknowledged(0)
    print(
        f"  closed: {status['clients_contributed']} hospitals in the sum, adapter v{status['adapter_version_out']} "
        f"({adapter.stat().st_size} bytes), ledger: central epsilon {ledger.get('central_epsilon')}, "
        f"{len(ledger.get('clients', []))} hospitals accounted",
        flush=True,
    )
    return {"status": status, "ledger": ledger, "acks": acks, "adapter_bytes": adapter.stat().st_size}


def faulted_round(drill: Drill) -> dict[str, Any]:
    print(f"== round 1: {' and '.join(FAULTED)} killed (SIGKILL) after the first acknowledged upload", flush=True)
    with drill.timed("round 1 until the first acknowledgement"):
        drill.until(
            "a hospital's upload of round 1 to be acknowledged",
            lambda: sum(drill.acknowledged(1).values()) >= 1,
            timeout_s=900,
            every_s=0.5,
        )
    acks_before = drill.acknowledged(1)
    for service in FAULTED:
        drill.podman("kill", "-s", "KILL", drill.container(service))
    print(f"  killed with {sum(acks_before.values())} upload(s) acknowledged: {acks_before}", flush=True)
    with drill.timed("edge-north and its Redis started again, healthy"):
        for service in reversed(FAULTED):  # its Redis first: the edge resumes from it
            drill.podman("start", drill.container(service))
        drill.healthy(*reversed(FAULTED))
    with drill.timed("round 1 closed"):
        drill.until("round 1 to close", lambda: drill.round_status(1)["state"] == "closed", timeout_s=900, every_s=3.0)
    status = drill.round_status(1)
    acks = drill.acknowledged(1)
    ledger = drill.admin("ledger", "-f", FEDERATION)
    return {"status": status, "acks": acks, "acks_at_kill": acks_before, "ledger": ledger}


def report(drill: Drill, first: dict[str, Any], second: dict[str, Any]) -> bool:
    print("== summary", flush=True)
    ok = True
    for name, result in (("round 0", first), ("round 1 (edge + Redis killed)", second)):
        status = result["status"]
        acked = sum(result["acks"].values())
        counted = status["clients_contributed"]
        lost = acked - counted
        ok &= status["state"] == "closed" and lost == 0 and counted == len(HOSPITALS)
        print(
            f"  {name}: {status['state']}, acknowledged to hospitals {acked}, counted by the cloud {counted}, "
            f"lost {lost}, adapter v{status['adapter_version_in']} -> v{status['adapter_version_out']}",
            flush=True,
        )
    ledger = second["ledger"]
    print(
        f"  ledger: central epsilon {ledger.get('central_epsilon')} over {len(ledger.get('central_rounds', []))} "
        f"rounds; example-level epsilon per hospital "
        + ", ".join(f"{c.get('client_id')} {c.get('epsilon')}" for c in ledger.get("clients", [])),
        flush=True,
    )
    for what, seconds in drill.timings:
        print(f"  {seconds:6.0f} s  {what}", flush=True)
    print(f"  {time.monotonic() - drill.started:6.0f} s  in all; {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the containers and volumes up")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "deploy-test")
    args = parser.parse_args()
    why = podman_unusable()
    if why is not None:
        print(f"deploy-test skipped: {why}", file=sys.stderr)
        return 2
    if (DEPLOY / ".env").exists():
        # podman-compose 1.0.3 lets deploy/.env win over the environment: the drill's data, spec and
        # secrets would be replaced by the deployment's.
        print("deploy-test: move deploy/.env aside first (podman-compose 1.0.3 lets it override the drill's settings)")
        return 1
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    spec_file, data = write_inputs(args.work)
    drill = Drill(
        work=args.work,
        image=os.environ.get("FEDLORA_IMAGE", "fedlora:0.1.0"),
        redis_image=os.environ.get("REDIS_IMAGE", "fedlora-redis:7-bookworm"),
    )
    drill.env = {
        **os.environ,
        "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF)),
        "FEDLORA_IMAGE": drill.image,
        "REDIS_IMAGE": drill.redis_image,
        "FEDLORA_ADMIN_TOKEN": secrets.token_urlsafe(32),
        "FEDLORA_KEK": secrets.token_hex(32),
        "FEDERATION_SPEC": str(spec_file),
        "HOSPITAL_A_DATA": str(data["hospital-a"]),
        "HOSPITAL_B_DATA": str(data["hospital-b"]),
    }
    drill.compose("down", "-v", check=False)  # what a killed earlier drill left behind
    try:
        bring_up(drill)
        first = clean_round(drill)
        second = faulted_round(drill)
        return 0 if report(drill, first, second) else 1
    except DrillError as e:
        print(f"deploy-test FAILED: {e}", file=sys.stderr)
        for service in ("cloud", "edge-north", *HOSPITALS):
            logs = drill.podman("logs", "--tail", "15", drill.container(service), check=False)
            print(f"--- {service}\n{logs.stdout}{logs.stderr}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            started = time.monotonic()
            drill.compose("down", "-v", check=False)
            print(f"  torn down (containers and volumes) in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
