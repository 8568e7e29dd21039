"""Real processes on loopback: the cloud and edges started with `python -m`, a tiny model on disk."""

import os
import secrets
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest
import torch
from transformers import BertConfig, BertModel

from client_agent.model import default_model_path
from fedlora.launcher import Cluster, Process, free_port

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


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def cluster(tmp_path):
    running = Cluster(tmp_path / "logs")
    yield running
    running.stop()


class Service:
    """One service process of the cluster that a test may `kill` (SIGKILL) and `restart` with the same env."""

    def __init__(self, cluster: Cluster, name: str, module: str, env: dict[str, str], url: str) -> None:
        self.cluster = cluster
        self.name = name
        self.module = module
        self.env = env
        self.url = url
        self.killed: list[Process] = []  # earlier processes of this service, for their logs
        self.process = self._start(name)

    def _start(self, name: str) -> Process:
        process = self.cluster.start(name, self.module, self.env)
        poll(lambda: healthy(self.url), timeout_s=60, what=name, cluster=self.cluster)
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
    ):
        self.admin_token = secrets.token_urlsafe(32)
        self.port = free_port()
        env = {
            "FEDLORA_ADMIN_TOKEN": self.admin_token,
            "FEDLORA_KEK": secrets.token_hex(32),
            "FEDLORA_PORT": str(self.port),
            "FEDLORA_STORE_URL": store_url,
            "FEDLORA_MODEL_PATH": str(model_dir),
            "FEDLORA_DEADLINE_CHECK_S": "0.2",
            "FEDLORA_LOG_JSON": "true",
            **(extra_env or {}),
        }
        super().__init__(cluster, "cloud", "cloud_server", env, f"http://127.0.0.1:{self.port}")
        self.admin = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=30
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
    ):
        self.port = free_port()
        self.edge_id = edge_id
        url = f"http://127.0.0.1:{self.port}"
        settings = {
            "FEDLORA_EDGE_ID": edge_id,
            "FEDLORA_FEDERATION_ID": fid,
            "FEDLORA_CLOUD_URL": cloud_url or cloud.url,
            "FEDLORA_PUBLIC_URL": url,
            "FEDLORA_ENROLMENT_TOKEN": issue_enrolment_token(cloud, fid, "edge", edge_id),
            "FEDLORA_KEY_FILE": str(tmp_path / f"{edge_id}.key"),
            "FEDLORA_PORT": str(self.port),
            "FEDLORA_STORE_URL": store_url,
            "FEDLORA_DEADLINE_CHECK_S": "0.2",
        } | (env or {})
        super().__init__(cluster, name or edge_id, "edge_aggregator", settings, url)


os.environ.setdefault("HF_HUB_OFFLINE", "1")
