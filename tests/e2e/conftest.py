"""Real processes on loopback: the cloud and edges started with `python -m`, a tiny model on disk.

Plain http (`FEDLORA_ALLOW_PLAIN_HTTP`) unless a test passes `tls=` (the session's `federation_ca`): then
every hop is https against the federation's CA, and each edge presents its own certificate to the cloud.
"""

import datetime as dt
import os
import secrets
import shutil
import signal
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
from transformers import BertConfig, BertModel

from client_agent.model import default_model_path
from fedlora.launcher import Cluster, Process, free_port
from fedlora.pki import Authority, issue, new_authority, save_issued
from services.tls import client_context

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT with MiniLM's tokenizer, saved like a downloaded model."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        source = default_model_path() / name
        if source.exists():
            shutil.copy(source, folder / name)
    return folder


def as_from_a_terminal() -> None:
    """`preexec_fn` of a child the test stops with Ctrl-C (SIGINT): SIGINT at its default, as a shell in a
    terminal starts it. A suite started in the background inherits SIGINT ignored, and a Python child then
    never raises KeyboardInterrupt (a clean-clone `.ci/run` started with `&` hung here)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def poll(predicate, *, timeout_s: float, what: str, cluster: Cluster | None = None, interval_s: float = 0.1):
    """Call `predicate` until it returns something truthy; fail after `timeout_s` (no unbounded waits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if cluster is not None:
            cluster.check()
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


@dataclass(frozen=True)
class PartyFiles:
    """A party's certificate, key and the CA it trusts, as `fedlora.pki.save_issued` wrote them."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    def env(self) -> dict[str, str]:
        return {
            "FEDLORA_TLS_CERT_FILE": str(self.cert_file),
            "FEDLORA_TLS_KEY_FILE": str(self.key_file),
            "FEDLORA_TLS_CA_FILE": str(self.ca_file),
        }

    def context(self, *, present: bool = False) -> ssl.SSLContext:
        """Verifies servers against this party's CA; presents this party's certificate when `present`."""
        context = client_context(
            ca_file=self.ca_file,
            cert_file=self.cert_file if present else None,
            key_file=self.key_file if present else None,
        )
        assert context is not None
        return context


class FederationCA:
    """A CA for the e2e tests (one per session: key generation is cheap, but one is enough) and the parties
    it issued, each in its own folder."""

    def __init__(
        self, folder: Path, federation_id: str = "fed-e2e", authority: Authority | None = None
    ) -> None:
        self.folder = folder
        self.federation_id = federation_id
        self.authority = authority or new_authority(f"fedlora {federation_id} CA")

    def party(
        self,
        role: str,
        party_id: str,
        *,
        days: int = 1,
        now: dt.datetime | None = None,
        name: str | None = None,
    ) -> PartyFiles:
        """A fresh certificate for `party_id` (reachable at 127.0.0.1 and localhost), valid from `now`."""
        issued = issue(
            self.authority,
            federation_id=self.federation_id,
            role=role,
            party_id=party_id,
            hosts=("127.0.0.1", "localhost"),
            days=days,
            now=now,
        )
        folder = self.folder / (name or f"{role}-{party_id}-{secrets.token_hex(4)}")
        cert, key = save_issued(issued, folder, "tls", ca_certificate_pem=self.authority.certificate_pem)
        return PartyFiles(cert, key, folder / "ca.crt")


@pytest.fixture(scope="session")
def federation_ca(tmp_path_factory) -> FederationCA:
    from tests.e2e.helpers import FID

    return FederationCA(tmp_path_factory.mktemp("pki"), FID)


def healthy(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2, verify=verify).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def cluster(tmp_path):
    running = Cluster(tmp_path / "logs")
    yield running
    running.stop()


class Service:
    """One service process of the cluster that a test may `kill` (SIGKILL) and `restart` with the same env."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        module: str,
        env: dict[str, str],
        url: str,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.verify = verify  # what a caller verifies this service with (the CA's context over TLS)
        self.cluster = cluster
        self.name = name
        self.module = module
        self.env = env
        self.url = url
        self.killed: list[Process] = []  # earlier processes of this service, for their logs
        self.process = self._start(name)

    def _start(self, name: str) -> Process:
        process = self.cluster.start(name, self.module, self.env)
        poll(lambda: healthy(self.url, self.verify), timeout_s=60, what=name, cluster=self.cluster)
        return process

    def kill(self) -> None:
        """`kill -9` of the process group, as a crash. The cluster forgets the process, so its exit -9 is
        not taken for a failure by `Cluster.check`."""
        process = self.process
        assert process.alive(), f"{self.name} had already exited:\n{process.tail()}"
        os.killpg(process.popen.pid, signal.SIGKILL)
        process.popen.wait(timeout=30)
        self.cluster.processes.remove(process)
        self.killed.append(process)

    def restart(self) -> None:
        """Start the module again with the same env (port, store, keys); returns once `/healthz` answers.
        The new process logs to its own file, so the killed one's log stays readable."""
        assert not self.process.alive(), f"{self.name} is still running; kill it first"
        self.process = self._start(f"{self.name}.restart{len(self.killed)}")

    def log_lines(self, process: Process | None = None) -> list[str]:
        return (process or self.process).log.read_text(errors="replace").splitlines()


class CloudProcess(Service):
    def __init__(
        self,
        cluster: Cluster,
        tmp_path: Path,
        model_dir: Path,
        extra_env: dict[str, str] | None = None,
        *,
        store_url: str = "memory://",
        tls: PartyFiles | None = None,
    ):
        self.admin_token = secrets.token_urlsafe(32)
        self.port = free_port()
        self.tls = tls
        env = {
            "FEDLORA_ADMIN_TOKEN": self.admin_token,
            "FEDLORA_KEK": secrets.token_hex(32),
            "FEDLORA_PORT": str(self.port),
            "FEDLORA_STORE_URL": store_url,
            "FEDLORA_EPHEMERAL_STORE": str(store_url == "memory://"),
            "FEDLORA_MODEL_PATH": str(model_dir),
            "FEDLORA_DEADLINE_CHECK_S": "0.2",
            # Uvicorn's shutdown waits for the requests in flight: an edge's plan long-poll held it up to the
            # 25 s default, so every cluster's teardown waited out `Cluster.stop`'s 10 s and then killed it.
            "FEDLORA_LONG_POLL_S": "2",
            "FEDLORA_LOG_JSON": "true",
            **(tls.env() if tls else {"FEDLORA_ALLOW_PLAIN_HTTP": "true"}),
            **(extra_env or {}),
        }
        scheme, verify = ("https", tls.context()) if tls else ("http", True)
        super().__init__(cluster, "cloud", "cloud_server", env, f"{scheme}://127.0.0.1:{self.port}", verify)
        # No idle connection kept: the test never closes this client, and over TLS the cloud's shutdown waited
        # for a kept-alive one's close_notify until `Cluster.stop` killed it 10 s later.
        self.admin = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
            verify=verify,
            limits=httpx.Limits(max_keepalive_connections=0),
        )


def issue_enrolment_token(cloud: CloudProcess, fid: str, role: str, subject: str) -> str:
    """A single-use enrolment token for `subject` as `role`, from the admin API."""
    response = cloud.admin.post(
        f"/federations/{fid}/enrolment-tokens", json={"role": role, "subject": subject}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["enrolment_token"])


class EdgeProcess(Service):
    """An edge. `name` (default: the edge id) names its log; replicas of one edge share `edge_id` and
    `key_file` and differ in `name` and port. `cloud_url` defaults to the cloud's own (a proxy may stand
    in between)."""

    def __init__(
        self,
        cluster: Cluster,
        tmp_path: Path,
        cloud: CloudProcess,
        edge_id: str,
        fid: str,
        *,
        store_url: str = "memory://",
        cloud_url: str | None = None,
        name: str | None = None,
        env: dict[str, str] | None = None,
        tls: PartyFiles | None = None,
    ):
        self.port = free_port()
        self.edge_id = edge_id
        self.tls = tls
        url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        settings = {
            "FEDLORA_EDGE_ID": edge_id,
            "FEDLORA_FEDERATION_ID": fid,
            "FEDLORA_CLOUD_URL": cloud_url or cloud.url,
            "FEDLORA_PUBLIC_URL": url,
            "FEDLORA_ENROLMENT_TOKEN": issue_enrolment_token(cloud, fid, "edge", edge_id),
            "FEDLORA_KEY_FILE": str(tmp_path / f"{edge_id}.key"),
            "FEDLORA_PORT": str(self.port),
            "FEDLORA_STORE_URL": store_url,
            "FEDLORA_EPHEMERAL_STORE": str(store_url == "memory://"),
            "FEDLORA_DEADLINE_CHECK_S": "0.2",
            **(tls.env() if tls else {"FEDLORA_ALLOW_PLAIN_HTTP": "true"}),
        } | (env or {})
        verify = tls.context() if tls else True
        super().__init__(cluster, name or edge_id, "edge_aggregator", settings, url, verify)


os.environ.setdefault("HF_HUB_OFFLINE", "1")
