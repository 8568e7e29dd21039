"""deploy/compose.yaml with Debian's podman-compose 1.0.3, stage by stage.

podman-compose 1.0.3 starts services in dependency order but does not wait on `depends_on: condition:`
(service_healthy, service_completed_successfully), and podman runs health checks from systemd timers, which
machines without systemd lack. A plain `podman-compose up -d` therefore starts Redis before store-users
wrote its ACL file and the bootstrap before the cloud answers (the bootstrap, a one-shot, then fails for
good). `up` here brings the stack up in the compose file's order, each stage with
`podman-compose up -d --no-deps SERVICE...`, and waits as the conditions say: a one-shot for its exit code
0, a server for `podman healthcheck run` (the compose file's own check) to pass.

    python deploy/compose_podman.py up        # project `fedlora`; secrets from deploy/.env or the shell
    python deploy/compose_podman.py down      # containers removed; volumes kept (`--volumes` drops them)

Podman runs with deploy/podman/containers.conf (CONTAINERS_CONF) unless the environment names another.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
COMPOSE_FILE = DEPLOY / "compose.yaml"
CONTAINERS_CONF = DEPLOY / "podman" / "containers.conf"
HOSPITALS = ("hospital-a", "hospital-b")
REDISES = ("redis-cloud", "redis-edge-north", "redis-edge-south")
EDGES = ("edge-north", "edge-south")


class StackError(RuntimeError):
    """A stage did not reach its state in time; the message names the service and what was awaited."""


def podman_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def podman_unusable() -> str | None:
    """Why podman cannot run the compose file here, or None."""
    for program in ("podman", "podman-compose"):
        if shutil.which(program) is None:
            return (
                f"{program} is not installed (make image installs Debian's podman, runc and podman-compose)"
            )
    info = subprocess.run(["podman", "info"], env=podman_env(), capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return f"podman info failed: {info.stderr.strip()[-500:]}"
    return None


@dataclass
class Stack:
    """One compose project: its name, the environment compose reads, and the wall time of each stage."""

    project: str
    env: dict[str, str] = field(default_factory=podman_env)
    timings: list[tuple[str, float]] = field(default_factory=list)

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["podman-compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise StackError(
                f"podman-compose {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}"
            )
        return done

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise StackError(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    def container(self, service: str) -> str:
        """podman-compose 1.0.3's name for a service's container."""
        return f"{self.project}_{service}_1"

    def logs(self, service: str) -> str:
        done = self.podman("logs", self.container(service), check=False)
        return done.stdout + done.stderr

    # -- waiting -----------------------------------------------------------------------------------------
    @staticmethod
    def until(what: str, predicate: Callable[[], bool], *, timeout_s: float, every_s: float = 1.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(every_s)  # polling containers that run on their own, with a bound

    def exited_ok(self, service: str, *, timeout_s: float = 300) -> None:
        def done() -> bool:
            state = self.podman(
                "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.container(service)
            )
            status, code = state.stdout.split()
            if status == "exited" and code != "0":
                tail = self.podman("logs", "--tail", "30", self.container(service), check=False)
                raise StackError(f"{service} exited {code}:\n{tail.stdout}{tail.stderr}")
            return status == "exited"

        self.until(f"{service} to finish", done, timeout_s=timeout_s)

    def healthy(self, *services: str, timeout_s: float = 300) -> None:
        for service in services:
            container = self.container(service)
            self.until(
                f"{service} to be healthy",
                lambda: self.podman("healthcheck", "run", container, check=False).returncode == 0,  # noqa: B023 - called in this iteration only
                timeout_s=timeout_s,
                every_s=2.0,
            )

    @contextmanager
    def timed(self, what: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        self.timings.append((what, time.monotonic() - start))
        print(f"  {what}: {time.monotonic() - start:.0f} s", flush=True)

    # -- the stages --------------------------------------------------------------------------------------
    def up(self) -> None:
        """deploy/compose.yaml's bootstrap order (its header), each stage awaited as its conditions say."""
        print(f"== {self.project}: up, stage by stage", flush=True)
        with self.timed("store-users, pki (one-shots)"):
            for one_shot in ("store-users", "pki"):
                self.compose("up", "-d", "--no-deps", one_shot)
                self.exited_ok(one_shot)
        with self.timed(f"{', '.join(REDISES)} healthy"):
            self.compose("up", "-d", "--no-deps", *REDISES)
            self.healthy(*REDISES)
        with self.timed("cloud healthy"):
            self.compose("up", "-d", "--no-deps", "cloud")
            self.healthy("cloud")
        with self.timed("bootstrap (federation created, tokens issued)"):
            self.compose("up", "-d", "--no-deps", "bootstrap")
            self.exited_ok("bootstrap")
        with self.timed(f"{', '.join(EDGES)} enrolled and healthy"):
            self.compose("up", "-d", "--no-deps", *EDGES)
            self.healthy(*EDGES)
        with self.timed(f"{', '.join(HOSPITALS)} started"):
            self.compose("up", "-d", "--no-deps", *HOSPITALS)

    def down(self, *, volumes: bool) -> None:
        """Every container removed at once (podman-compose 1.0.3's `down` stops them one by one, 10 s each,
        and can leave a container in a restart loop behind, which a later `up` would start again); then
        `down` for the network, and with `volumes` every volume of the project."""
        label = f"label=io.podman.compose.project={self.project}"
        left = self.podman("ps", "-a", "-q", "--filter", label, check=False).stdout.split()
        if left:
            self.podman("rm", "-f", "-t", "0", *left, check=False)
        self.compose("down", *(["-v"] if volumes else []), check=False)
        if volumes:
            found = self.podman("volume", "ls", "-q", "--filter", label, check=False).stdout.split()
            if found:
                self.podman("volume", "rm", "-f", *found, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("-p", "--project", default="fedlora", help="the compose project (default: fedlora)")
    parser.add_argument("--volumes", action="store_true", help="down: remove the project's volumes too")
    args = parser.parse_args()
    why = podman_unusable()
    if why is not None:
        print(why, file=sys.stderr)
        return 2
    stack = Stack(args.project)
    try:
        if args.action == "up":
            stack.up()
        else:
            stack.down(volumes=args.volumes)
    except StackError as e:
        print(f"{args.action} failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
