"""`make deploy-test`: deploy/compose.yaml in containers (podman-compose), one clean round, then a round in
which one edge and its Redis are killed with SIGKILL mid-round and started again; the round must complete
with every upload acknowledged to a hospital counted by the cloud. Everything is torn down at the end, also
on failure (`--keep` leaves it up for a look).

The stack comes up stage by stage as deploy/compose_podman.py brings it up (podman-compose 1.0.3 does not
wait on depends_on conditions), under its own project `fedlora-drill`, with fresh secrets, a federation
with few local steps and generated notes for each hospital. The admin's commands are
`fedlora admin ... --json` from the host's virtual environment, over the published port 8700 with the
federation's CA read from the volume pki-public.

Exit status 0 when both rounds completed and nothing acknowledged was lost; 1 otherwise; 2 when podman is
not usable here (the reason is printed).
"""

from __future__ import annotations

import argparse
import csv
import json
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from compose_podman import DEPLOY, HOSPITALS, Stack, StackError, podman_unusable

ROOT = DEPLOY.parent
PROJECT = "fedlora-drill"
FEDERATION = "staging"
FAULTED = ("edge-north", "redis-edge-north")
# Per hospital: enough that its noised public example count stays above the batch size.
NOTES = 120


@dataclass
class Drill(Stack):
    """The drill's stack, its working folder and the admin's view of the federation."""

    work: Path = ROOT / "runs" / "deploy-test"
    started: float = field(default_factory=time.monotonic)

    def admin(self, *args: str) -> Any:
        """`fedlora admin ARGS --json` against the published cloud; its JSON answer."""
        fedlora = Path(sys.executable).with_name("fedlora")
        done = subprocess.run(
            [str(fedlora), "admin", *args, "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise StackError(
                f"fedlora admin {' '.join(args)} failed: {done.stdout[-1000:]}{done.stderr[-1000:]}"
            )
        return json.loads(done.stdout)

    def acknowledged(self, round_: int) -> dict[str, int]:
        """Per hospital, the uploads of `round_` its agent logged as held by its edge ("uploaded")."""
        return {h: len(_logged(self.logs(h), "uploaded", round_)) for h in HOSPITALS}

    def edge_accepted(self, round_: int) -> set[str]:
        """The hospitals whose upload of `round_` edge-north answered as accepted ("upload accepted")."""
        return {record["client_id"] for record in _logged(self.logs("edge-north"), "upload accepted", round_)}

    def round_status(self, round_: int) -> dict[str, Any]:
        status: dict[str, Any] = self.admin("round", "-f", FEDERATION, str(round_))
        return status

    def closed(self, round_: int) -> bool:
        """True once `round_` closed; a failed round stops the drill."""
        state = str(self.round_status(round_)["state"])
        if state == "failed":
            raise StackError(f"round {round_} failed: {self.round_status(round_)}")
        return state == "closed"


def _logged(logs: str, message: str, round_: int) -> list[dict[str, Any]]:
    """The JSON log lines (services/logs.py) that say `message` about `round_`."""
    found = []
    for line in logs.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("msg") == message and record.get("round") == round_:
            found.append(record)
    return found


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


def enrolled(drill: Drill) -> None:
    """The CA from the volume pki-public for the admin's commands; both hospitals enrolled."""
    ca = drill.podman("volume", "inspect", "--format", "{{.Mountpoint}}", f"{PROJECT}_pki-public").stdout
    shutil.copy(Path(ca.strip()) / "ca.crt", drill.work / "ca.crt")
    drill.env |= {
        "FEDLORA_CLOUD_URL": "https://127.0.0.1:8700",
        "FEDLORA_TLS_CA_FILE": str(drill.work / "ca.crt"),
    }
    with drill.timed("hospitals enrolled"):
        drill.until(
            "both hospitals to enrol",
            lambda: len(drill.admin("clients", "-f", FEDERATION)) == len(HOSPITALS),
            timeout_s=600,
            every_s=3.0,
        )


def clean_round(drill: Drill) -> None:
    """Round 0 to its close. Round 1 opens at once and the hospitals train for it: the drill reads round 0's
    adapter and ledger only after round 1's fault (`checked`), so that it watches for round 1's first
    upload from the start."""
    print("== round 0: no faults", flush=True)
    with drill.timed("round 0 (train, encrypt, upload, sum, decrypt)"):
        drill.admin("start", "-f", FEDERATION)
        drill.until("round 0 to close", lambda: drill.closed(0), timeout_s=900, every_s=1.0)


def checked(drill: Drill, round_: int) -> dict[str, Any]:
    """A closed round's status, its adapter downloaded and the ledger, through the admin API."""
    status = drill.round_status(round_)
    adapter = drill.work / f"adapter-v{status['adapter_version_out']}.zip"
    drill.admin(
        "download", "-f", FEDERATION, "--version", str(status["adapter_version_out"]), "--out", str(adapter)
    )
    ledger = drill.admin("ledger", "-f", FEDERATION)
    print(
        f"  round {round_}: {status['clients_contributed']} hospitals in the sum, adapter "
        f"v{status['adapter_version_out']} ({adapter.stat().st_size} bytes) downloaded; ledger: "
        f"{len(ledger['clients'])} hospitals accounted",
        flush=True,
    )
    return {"status": status, "ledger": ledger, "acks": drill.acknowledged(round_)}


def faulted_round(drill: Drill) -> dict[str, Any]:
    print(
        f"== round 1: {' and '.join(FAULTED)} killed (SIGKILL) once the edge acknowledged an upload",
        flush=True,
    )
    with drill.timed("round 1 until edge-north acknowledged the first upload"):
        drill.until(
            "edge-north to acknowledge an upload of round 1",
            lambda: bool(drill.edge_accepted(1)),
            timeout_s=900,
            every_s=0.3,
        )
    for service in FAULTED:
        drill.podman("kill", "-s", "KILL", drill.container(service))
    accepted_at_kill = drill.edge_accepted(1)
    at_kill = drill.round_status(1)
    forwarded = any(edge["forwarded"] for edge in at_kill["edges"] if edge["edge_id"] == "edge-north")
    print(
        f"  killed with {len(accepted_at_kill)} upload(s) acknowledged by the edge ({', '.join(sorted(accepted_at_kill))}); "
        f"the round at the cloud: {at_kill['state']}, edge-north's sum forwarded: {forwarded}",
        flush=True,
    )
    with drill.timed("edge-north and its Redis started again, healthy"):
        for service in reversed(FAULTED):  # its Redis first: the edge resumes from it
            drill.podman("start", drill.container(service))
        drill.healthy(*reversed(FAULTED))
    with drill.timed("round 1 closed"):
        drill.until("round 1 to close", lambda: drill.closed(1), timeout_s=900, every_s=3.0)
    return {"edge_acks": accepted_at_kill, "forwarded_at_kill": forwarded}


def report(drill: Drill, first: dict[str, Any], second: dict[str, Any]) -> bool:
    print("== summary", flush=True)
    ok = True
    for name, result in (("round 0", first), ("round 1 (edge + Redis killed)", second)):
        status = result["status"]
        # Acknowledged: each hospital that logged its upload as held, and each the edge answered as accepted
        # before it was killed (an agent logs "uploaded" only once the round's masking is done).
        acknowledged = {h for h, n in result["acks"].items() if n} | result.get("edge_acks", set())
        acked = len(acknowledged)
        counted = status["clients_contributed"]
        lost = acked - counted
        ok &= status["state"] == "closed" and lost == 0 and counted == len(HOSPITALS)
        print(
            f"  {name}: {status['state']}, acknowledged to hospitals {acked}, counted by the cloud {counted}, "
            f"lost {lost}, adapter v{status['adapter_version_in']} -> v{status['adapter_version_out']}",
            flush=True,
        )
    if second["forwarded_at_kill"]:
        ok = False
        print("  the kill came after edge-north forwarded its sum: round 1 was not hit mid-round", flush=True)
    ledger = second["ledger"]
    local = {c["client_id"]: c["local_epsilon"] for c in ledger["clients"]}
    ok &= sorted(local) == sorted(HOSPITALS) and all(e is not None and e > 0 for e in local.values())
    print(
        f"  ledger: central epsilon {ledger['central_epsilon']} over {len(ledger['central_rounds'])} rounds "
        "(None: the spec adds no central noise); example-level epsilon per hospital "
        + ", ".join(f"{c} {e:.3g}" if e is not None else f"{c} none" for c, e in sorted(local.items())),
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
        print("deploy-test: move deploy/.env aside first (podman-compose 1.0.3 lets it override the drill's)")
        return 1
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    spec_file, data = write_inputs(args.work)
    drill = Drill(PROJECT, work=args.work)
    drill.env |= {
        "FEDLORA_ADMIN_TOKEN": secrets.token_urlsafe(32),
        "FEDLORA_KEK": secrets.token_hex(32),
        "FEDERATION_SPEC": str(spec_file),
        "HOSPITAL_A_DATA": str(data["hospital-a"]),
        "HOSPITAL_B_DATA": str(data["hospital-b"]),
    }
    drill.env.setdefault("REDIS_IMAGE", "fedlora-redis:7-bookworm")
    drill.down(volumes=True)  # what a killed earlier drill left behind
    try:
        drill.up()
        enrolled(drill)
        clean_round(drill)
        fault = faulted_round(drill)
        print("== the admin's view, after both rounds", flush=True)
        first = checked(drill, 0)
        second = checked(drill, 1) | fault
        return 0 if report(drill, first, second) else 1
    except StackError as e:
        print(f"deploy-test FAILED: {e}", file=sys.stderr)
        for service in ("cloud", "edge-north", *HOSPITALS):
            logs = drill.podman("logs", "--tail", "15", drill.container(service), check=False)
            print(f"--- {service}\n{logs.stdout}{logs.stderr}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            started = time.monotonic()
            drill.down(volumes=True)
            print(f"  torn down (containers and volumes) in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
