"""`fedlora view`: a finished demo's redis-server and a cloud on it again, for the dashboard and `fedlora status`.

Nothing else is started: no edge, no hospital. A completed, stopped or budget-exhausted federation has no
current round, so the cloud's deadline check leaves it as it is (`RoundService.advance` returns at once);
only a demo interrupted mid-round would see its open round closed or failed once its deadline has passed.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from fedlora.demo_run import DemoRunFolder
from fedlora.launcher import Cluster, LaunchError, Process, free_port
from fedlora.redis_process import RedisProcess, RedisProcessError
from protocol.messages import FederationInfo, FederationState
from services.tls import client_context

START_TIMEOUT_S = 120.0
SUPERVISE_EVERY_S = 1.0


@dataclass
class RunningView:
    run: DemoRunFolder
    redis: RedisProcess
    cluster: Cluster
    cloud: Process
    cloud_url: str

    @property
    def dashboard_url(self) -> str:
        return f"{self.cloud_url}/dashboard"

    def federations(self) -> list[FederationInfo]:
        token = self.run.admin_token_file.read_text().strip()
        response = httpx.get(
            f"{self.cloud_url}/federations",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            verify=_verify(self.run),
        )
        response.raise_for_status()
        return [FederationInfo.model_validate(f) for f in response.json()]

    def still_active(self) -> list[str]:
        """Federations the demo left running (it was interrupted): the deadline check may move them on.
        Raises `httpx.HTTPError` if the cloud cannot list them."""
        return [f.spec.federation_id for f in self.federations() if f.state is FederationState.ACTIVE]

    def serve(self) -> None:
        """Block until the cloud or redis-server exits on its own (`LaunchError`) or a signal interrupts."""
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):  # the supervision period
                self.cloud.popen.wait(timeout=SUPERVISE_EVERY_S)
            self.cluster.check()
            if not self.cloud.alive():
                raise LaunchError(f"the cloud exited:\n{self.cloud.tail()}")
            if not self.redis.alive():
                raise LaunchError(f"redis-server exited:\n{self.redis.log_tail()}")

    def stop(self) -> None:
        """The cloud first (SIGTERM: it closes its store), then SHUTDOWN for Redis: the AOF stays complete."""
        try:
            self.cluster.stop()
        finally:
            self.redis.stop()


def start_view(folder: Path, *, port: int, timeout_s: float = START_TIMEOUT_S) -> RunningView:
    """Start the run's redis-server on its data folder and a cloud on it at 127.0.0.1:`port`; return once
    the cloud answers /healthz. Raises `RunFolderError` or `LaunchError`, with nothing left running."""
    run = DemoRunFolder(folder)
    run.check()
    _require_free(port)
    redis = run.redis_process(port=free_port())
    cluster = Cluster(run.log_dir)
    cloud_url = f"https://127.0.0.1:{port}"
    try:
        try:
            redis.start()
        except RedisProcessError as e:
            raise LaunchError(str(e)) from e
        cloud = cluster.start("view-cloud", "cloud_server", run.cloud_env(port=port, store_url=redis.url))
        deadline = time.monotonic() + timeout_s
        while not _healthy(cloud_url, _verify(run)):
            cluster.check()
            if not cloud.alive():
                raise LaunchError(f"the cloud exited:\n{cloud.tail()}")
            if time.monotonic() > deadline:
                raise LaunchError(f"the cloud did not answer within {timeout_s:g} s:\n{cloud.tail()}")
            time.sleep(0.1)  # the poll interval, bounded by the deadline above
    except BaseException:  # a Ctrl-C while starting too: stop what was started
        cluster.stop()
        redis.stop()
        raise
    return RunningView(run, redis, cluster, cloud, cloud_url)


def _require_free(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise LaunchError(f"port {port} is in use on 127.0.0.1; pass --port with a free one") from e


def _verify(run: DemoRunFolder) -> ssl.SSLContext:
    """The run's CA: the cloud's certificate is verified against it."""
    context = client_context(ca_file=run.party(None).ca_file)
    assert context is not None  # a CA file was given
    return context


def _healthy(url: str, verify: ssl.SSLContext) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2, verify=verify).status_code == 200
    except httpx.TransportError:
        return False
