"""Real processes on loopback: the cloud and edges started with `python -m`, a tiny model on disk."""

import os
import secrets
import shutil
import time
from pathlib import Path

import httpx
import pytest
import torch
from transformers import BertConfig, BertModel

from client_agent.model import default_model_path
from services.launcher import Cluster, free_port

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


class CloudProcess:
    def __init__(
        self, cluster: Cluster, tmp_path: Path, model_dir: Path, extra_env: dict[str, str] | None = None
    ):
        self.admin_token = secrets.token_urlsafe(32)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "FEDLORA_ADMIN_TOKEN": self.admin_token,
            "FEDLORA_KEK": secrets.token_hex(32),
            "FEDLORA_PORT": str(self.port),
            "FEDLORA_STORE_URL": "memory://",
            "FEDLORA_MODEL_PATH": str(model_dir),
            "FEDLORA_DEADLINE_CHECK_S": "0.2",
            "FEDLORA_LOG_JSON": "true",
            **(extra_env or {}),
        }
        self.process = cluster.start("cloud", "cloud_server", self.env)
        poll(lambda: healthy(self.url), timeout_s=60, what="the cloud", cluster=cluster)
        self.admin = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=30
        )


class EdgeProcess:
    def __init__(
        self,
        cluster: Cluster,
        tmp_path: Path,
        cloud: CloudProcess,
        edge_id: str,
        enrolment_token: str,
        fid: str,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.edge_id = edge_id
        self.process = cluster.start(
            edge_id,
            "edge_aggregator",
            {
                "FEDLORA_EDGE_ID": edge_id,
                "FEDLORA_FEDERATION_ID": fid,
                "FEDLORA_CLOUD_URL": cloud.url,
                "FEDLORA_PUBLIC_URL": self.url,
                "FEDLORA_ENROLMENT_TOKEN": enrolment_token,
                "FEDLORA_KEY_FILE": str(tmp_path / f"{edge_id}.key"),
                "FEDLORA_PORT": str(self.port),
                "FEDLORA_STORE_URL": "memory://",
                "FEDLORA_DEADLINE_CHECK_S": "0.2",
            },
        )
        poll(lambda: healthy(self.url), timeout_s=60, what=edge_id, cluster=cluster)


os.environ.setdefault("HF_HUB_OFFLINE", "1")
