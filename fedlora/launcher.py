"""The demo launcher: a cloud, edges and hospitals as separate processes on loopback, and a live view.

Like the CLI, this is the one layer that knows every tier, and it knows them only by module name
(`python -m cloud_server`, `python -m edge_aggregator`, `python -m client_agent`) and over HTTP. It
evaluates each global adapter version on the held-out set with the project's own inference, so the
table shows what the federation learned round by round, and records each evaluation at the cloud
(`PUT .../adapters/{version}/evaluation`) for `fedlora status` and the dashboard.
"""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

from client_agent.recipe import HEAD_LEARNING_RATE
from fedlora.admin_api import ApiError, change_lifecycle, create_federation
from fedlora.demo_run import DemoRunFolder
from fedlora.enrolment_tokens import issue_enrolment_token
from fedlora.redis_process import RedisMissingError, RedisProcessError, redis_binary
from fedlora.specs import federation_spec
from protocol.messages import (
    FORWARD_BUDGET_S,
    MAX_CLOCK_SKEW_S,
    AdapterEvaluation,
    AdapterVersion,
    ClientInfo,
    EdgeProgress,
    FederationInfo,
    FederationSpec,
    Role,
    RoundStatus,
    Strategy,
    TaskType,
)
from protocol.strategies import strategy_class
from services.tls import verify_for

T = TypeVar("T")


class LaunchError(RuntimeError):
    """A process did not come up, or the federation did not finish in time."""


async def _admin(call: Awaitable[T]) -> T:
    """An admin call of `fedlora.admin_api` (the code `fedlora admin` runs); a refusal is a `LaunchError`."""
    try:
        return await call
    except ApiError as e:
        raise LaunchError(str(e)) from e


async def _enrolment_token(admin: httpx.AsyncClient, fid: str, role: Role, subject: str) -> str:
    """The single-use enrolment token the admin issues `subject` before its process starts, as
    `fedlora admin tokens issue` does."""
    return (await _admin(issue_enrolment_token(admin, fid, role, subject))).enrolment_token


@dataclass(frozen=True)
class DemoConfig:
    hospitals: int = 4
    edges: int = 2
    rounds: int = 3
    task: str = "rt_sentiment"
    partition: str = "mild"
    max_train_examples: int = 8000
    max_test_examples: int = 1000
    epsilon: float = 8.0
    steps: int = 16
    batch_size: int = 256
    learning_rate: float = 2.0
    head_learning_rate: float | None = HEAD_LEARNING_RATE  # None: `learning_rate`, the old recipe
    max_seq_length: int = 32
    rank: int = 2
    min_clients_per_edge: int = 2
    #: Client-level DP: z of the Gaussian noise on each round's sum (0 = off). With four hospitals any z
    #: that leaves the model usable gives a weak client-level guarantee; the ledger says how weak.
    central_noise: float = 0.25
    distributed: bool = True  # the hospitals add the noise in shares, so nobody sees a noise-free sum
    strategy: Strategy = Strategy.FFA
    timeout_s: float = 1800.0
    out_dir: Path = Path("runs/demo")
    #: The base model for the cloud, the hospitals and the evaluation; None = the bundled MiniLM.
    model_path: Path | None = None
    layers: tuple[int, ...] = (4, 5)  # the layers the adapter is on (MiniLM's last two)
    target_modules: tuple[str, ...] = ("value",)  # e.g. ("q_proj", "v_proj") for a Llama

    def hospital_opt_ins(self) -> dict[str, str]:
        """The unsafe options the demo's hospitals must opt into, as `FEDLORA_*` variables. A hospital's own
        policy refuses a federation without encryption (CLAIR reads each region's sum in the clear) or
        without DP-SGD (`epsilon` 0), so a demo of either says so to every hospital, which logs it loudly."""
        opt_ins = {}
        if strategy_class(self.strategy).requires_plaintext:
            opt_ins["FEDLORA_ALLOW_PLAINTEXT"] = "true"
        if self.epsilon <= 0:
            opt_ins["FEDLORA_ALLOW_WITHOUT_LOCAL_DP"] = "true"
        return opt_ins

    def spec(self, federation_id: str) -> FederationSpec:
        rule = strategy_class(self.strategy)
        central_noise = self.central_noise if rule.allows_central_noise else 0.0
        from client_agent.data.tasks import QA_TASKS

        causal = self.task in QA_TASKS
        return federation_spec(
            federation_id=federation_id,
            task_type=TaskType.CAUSAL_LM if causal else TaskType.SEQUENCE_CLASSIFICATION,
            num_labels=2,
            target_modules=self.target_modules,
            layers_to_transform=self.layers,
            rank=self.rank,
            alpha=8.0,
            # A strategy may need each region's sum in the clear (CLAIR) or refuse client-level noise; every
            # other runs the default federation: packed Paillier with the uploads masked below it.
            scheme="none" if rule.requires_plaintext else "paillier",
            masking=not rule.requires_plaintext,
            # Packed Paillier's range: a delta of norm up to C plus the hospitals' Skellam shares, 20 bits.
            he_clip=4.0,
            quant_bits=20,
            epsilon=max(self.epsilon, 1e-3),
            dp_sgd=self.epsilon > 0,
            central_noise=central_noise,
            distributed=self.distributed and central_noise > 0,
            learning_rate=self.learning_rate,
            # The head's rate is a classifier's: a causal LM has no head, and its spec refuses one.
            head_learning_rate=None if causal else self.head_learning_rate,
            steps=self.steps,
            batch_size=self.batch_size,
            max_seq_length=self.max_seq_length,
            rounds=self.rounds,
            strategy=self.strategy,
            min_clients_per_edge=self.min_clients_per_edge,
            round_deadline_s=self.timeout_s,
            # The edges close a tenth of the round earlier, and never less than the spec's deadline margin.
            upload_deadline_s=self.timeout_s - max(0.1 * self.timeout_s, FORWARD_BUDGET_S + MAX_CLOCK_SKEW_S),
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Cluster:
    """Every process the launcher started; `stop` ends them all, whatever happened."""

    log_dir: Path
    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, module: str, env: dict[str, str]) -> Process:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        # The child gets its own copy of the file descriptor; ours is closed as soon as it has started.
        with log.open("wb") as handle:
            popen = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", module],
                env={**os.environ, **env},
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def check(self) -> None:
        for process in self.processes:
            if not process.alive() and process.popen.returncode not in (0, None):
                raise LaunchError(f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        for process in self.processes:
            if process.alive():
                os.killpg(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            try:
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait()


async def wait_until(
    predicate: Callable[[], Any], *, timeout_s: float, what: str, cluster: Cluster, interval_s: float = 0.25
) -> Any:
    """Poll `predicate` (sync or async) until it returns a truthy value; bounded, never a bare sleep-wait."""
    deadline = time.monotonic() + timeout_s
    while True:
        cluster.check()
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise LaunchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval_s)


@dataclass
class RoundView:
    round: int
    state: str
    edges: dict[str, EdgeProgress]
    accuracy: float | None
    max_epsilon: float | None
    seconds: float | None


class Evaluator:
    """Held-out accuracy of a global adapter with the project's own inference (rank r_max)."""

    def __init__(self, spec: FederationSpec, config: DemoConfig) -> None:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        from client_agent.data import task_split
        from client_agent.model import default_model_path
        from client_agent.tasks import task_for

        hf_logging.set_verbosity_error()
        _, test = task_split(config.task, max_test_examples=config.max_test_examples)
        path = config.model_path or default_model_path()
        self.task = task_for(spec)
        self.model = self.task.build_model(path, spec, rank=spec.r_max)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.features = self.task.encode(self.model, tokenizer, test, max_length=config.max_seq_length)
        counts = np.bincount(test.label_array(), minlength=test.n_classes)
        self.majority = float(counts.max() / counts.sum())
        self.dataset = f"{config.task}:test"

    def evaluate(self, vector: np.ndarray, *, basis: bytes | None = None) -> AdapterEvaluation:
        """Accuracy and mean cross-entropy on the held-out set, as the cloud records them per version.

        `basis` is the version's basis as `GET /federations/{fid}/basis/{v}` serves it, for a version
        trained in a re-based basis; None: the seeded one this model was built with."""
        from protocol.ffa import basis_from_bytes, seeded_bases

        layout, in_features = self.model.layout, self.model.in_features()
        if basis is not None:
            self.model.install_basis(basis_from_bytes(basis, layout, in_features))
        elif self.model.bases is not None:  # back to the seeded basis after evaluating a re-based version
            spec = self.model.spec
            self.model.install_basis(
                seeded_bases(layout, in_features, seed=spec.seed, basis_version=spec.basis_version)
            )
        self.model.load_global(vector)
        loss, accuracy = self.task.evaluate(self.model, self.features)
        return AdapterEvaluation(
            metrics={"accuracy": accuracy, "loss": loss}, examples=len(self.features), dataset=self.dataset
        )

    def accuracy(self, vector: np.ndarray) -> float:
        return self.evaluate(vector).metrics["accuracy"]


async def run_demo(
    config: DemoConfig,
    *,
    on_update: Callable[[list[RoundView], dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the whole federation; returns the run report (also written to `out_dir/report.json`)."""
    import json

    out = config.out_dir
    try:
        redis_binary()  # before anything is started or the previous run's state is replaced
    except RedisMissingError as error:
        raise LaunchError(f"{error}; the demo keeps its cloud's state in it for `fedlora view`") from error
    admin_token = secrets.token_urlsafe(32)
    run = DemoRunFolder(out)
    run.prepare(
        admin_token=admin_token, kek_hex=secrets.token_hex(32), cloud_settings=_cloud_settings(config)
    )
    # The cloud's state (rounds, ledger, adapters, evaluations) outlives the run in redis/, for
    # `fedlora view`. The edges keep theirs in memory: the cloud's rounds already hold each edge's
    # progress, and nothing starts an edge again after the demo.
    redis = run.redis_process(port=free_port())
    fid = "demo"
    edge_ids = [f"edge-{e + 1}" for e in range(config.edges)]
    client_ids = [f"hospital-{chr(ord('a') + h)}" for h in range(config.hospitals)]
    # Every hop on TLS: the run's own CA and a certificate per party, as `fedlora pki init` issues them.
    run.issue_certificates(federation_id=fid, edges=edge_ids, clients=client_ids)
    cloud_port = free_port()
    cloud_url = f"https://127.0.0.1:{cloud_port}"
    cluster = Cluster(out / "logs")
    started = time.monotonic()
    summary: dict[str, Any] = {"phase": "starting Redis and the cloud"}
    views: dict[int, RoundView] = {}
    evaluated: dict[int, float] = {}

    def show() -> None:
        if on_update is not None:
            on_update([views[k] for k in sorted(views)], summary)

    try:
        try:
            await asyncio.to_thread(redis.start)
        except RedisProcessError as error:
            raise LaunchError(str(error)) from error
        cluster.start("cloud", "cloud_server", run.cloud_env(port=cloud_port, store_url=redis.url))
        admin = httpx.AsyncClient(
            base_url=cloud_url,
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=60,
            verify=verify_for(cloud_url, ca_file=run.party(None).ca_file),
        )

        async def healthy(client: httpx.AsyncClient) -> bool:
            try:
                return (await client.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        show()
        await wait_until(lambda: healthy(admin), timeout_s=120, what="the cloud", cluster=cluster)
        # The dashboard of this run: the token in a file only its owner reads (loopback, one run only).
        summary["dashboard"] = f"{cloud_url}/dashboard (admin token in {run.admin_token_file})"
        spec = config.spec(fid)
        await _admin(create_federation(admin, spec))  # as `fedlora admin create` does

        summary["phase"] = "starting the edges"
        show()
        edge_urls: dict[str, str] = {}
        for edge_id in edge_ids:
            port = free_port()
            edge_urls[edge_id] = f"https://127.0.0.1:{port}"
            cluster.start(
                edge_id,
                "edge_aggregator",
                {
                    "FEDLORA_EDGE_ID": edge_id,
                    "FEDLORA_FEDERATION_ID": fid,
                    "FEDLORA_CLOUD_URL": cloud_url,
                    "FEDLORA_PUBLIC_URL": edge_urls[edge_id],
                    "FEDLORA_ENROLMENT_TOKEN": await _enrolment_token(admin, fid, Role.EDGE, edge_id),
                    "FEDLORA_KEY_FILE": str(out / "state" / f"{edge_id}.key"),
                    "FEDLORA_PORT": str(port),
                    "FEDLORA_STORE_URL": "memory://",
                    "FEDLORA_EPHEMERAL_STORE": "1",  # the demo's edges: thrown away at its end
                    **run.party(Role.EDGE, edge_id).env(),
                },
            )

        async def count(path: str) -> int:
            response = await admin.get(f"/federations/{fid}/{path}")
            return len(response.json()) if response.status_code == 200 else 0

        await wait_until(
            lambda: _at_least(count("edges"), config.edges),
            timeout_s=120,
            what="the edges to enrol",
            cluster=cluster,
        )

        summary["phase"] = "starting the hospitals (load data, de-identify, enrol)"
        show()
        for h, client_id in enumerate(client_ids):
            cluster.start(
                client_id,
                "client_agent",
                {
                    "FEDLORA_CLIENT_ID": client_id,
                    "FEDLORA_FEDERATION_ID": fid,
                    "FEDLORA_EDGE_ID": f"edge-{h % config.edges + 1}",
                    "FEDLORA_CLOUD_URL": cloud_url,
                    "FEDLORA_ENROLMENT_TOKEN": await _enrolment_token(admin, fid, Role.CLIENT, client_id),
                    "FEDLORA_STATE_DIR": str(out / "state" / client_id),
                    "FEDLORA_TASK": config.task,
                    "FEDLORA_PARTITION": f"{config.partition}:{h + 1}/{config.hospitals}",
                    "FEDLORA_MAX_TRAIN_EXAMPLES": str(config.max_train_examples),
                    "FEDLORA_THREADS": "1",
                    **({"FEDLORA_MODEL_PATH": str(config.model_path)} if config.model_path else {}),
                    **config.hospital_opt_ins(),
                    **run.party(Role.CLIENT, client_id).env(),
                },
            )
        await wait_until(
            lambda: _at_least(count("clients"), config.hospitals),
            timeout_s=300,
            what="the hospitals to enrol",
            cluster=cluster,
        )
        summary["phase"] = "encoding the held-out set for evaluation"
        show()
        evaluator = await asyncio.to_thread(Evaluator, spec, config)
        zero = np.zeros(len(np.frombuffer(await _vector(admin, fid, 0), dtype="<f4")), dtype=np.float32)
        before = await asyncio.to_thread(evaluator.evaluate, zero)
        await _record_evaluation(admin, fid, 0, before)
        summary["accuracy_before"] = before.metrics["accuracy"]
        summary["majority_rate"] = evaluator.majority

        await _admin(change_lifecycle(admin, fid, "start"))  # as `fedlora admin start` does
        summary["phase"] = "training"
        show()

        async def finished() -> bool:
            info = FederationInfo.model_validate_json((await admin.get(f"/federations/{fid}")).content)
            rounds = [
                RoundStatus.model_validate(r) for r in (await admin.get(f"/federations/{fid}/rounds")).json()
            ]
            clients = [
                ClientInfo.model_validate(c) for c in (await admin.get(f"/federations/{fid}/clients")).json()
            ]
            epsilons = [c.local_epsilon for c in clients if c.local_epsilon is not None]
            for status in rounds:
                edges: dict[str, EdgeProgress] = {}
                for edge_id, url in edge_urls.items():
                    try:
                        response = await admin.get(f"{url}/federations/{fid}/rounds/{status.round}")
                        if response.status_code == 200:
                            edges[edge_id] = EdgeProgress.model_validate_json(response.content)
                    except httpx.TransportError:
                        pass
                for progress in status.edges:
                    edges.setdefault(progress.edge_id, progress)
                version = status.adapter_version_out
                if version is not None and version not in evaluated:
                    vector = np.frombuffer(await _vector(admin, fid, version), dtype="<f4").copy()
                    basis = await adapter_basis(admin, fid, version, seeded=spec.basis_version)
                    evaluation = await asyncio.to_thread(evaluator.evaluate, vector, basis=basis)
                    await _record_evaluation(admin, fid, version, evaluation)  # for status and the dashboard
                    evaluated[version] = evaluation.metrics["accuracy"]
                seconds = (status.closed_at - status.opened_at).total_seconds() if status.closed_at else None
                # Epsilon as first seen once the round closed: the clients' figure grows with later rounds.
                previous = views.get(status.round)
                epsilon = previous.max_epsilon if previous is not None else None
                if epsilon is None and epsilons and status.state.value == "closed":
                    epsilon = max(epsilons)
                views[status.round] = RoundView(
                    status.round,
                    status.state.value,
                    edges,
                    evaluated.get(version) if version is not None else None,
                    epsilon,
                    seconds,
                )
            summary["state"] = info.state.value
            summary["elapsed_s"] = time.monotonic() - started
            show()
            return info.state.value in ("completed", "stopped", "budget_exhausted")

        await wait_until(
            finished, timeout_s=config.timeout_s, what="the rounds", cluster=cluster, interval_s=1.0
        )
        info = FederationInfo.model_validate_json((await admin.get(f"/federations/{fid}")).content)
        adapter_zip = await admin.get(f"/federations/{fid}/adapters/{info.adapter_version}")
        adapter_dir = out / "adapter"
        with zipfile.ZipFile(io.BytesIO(adapter_zip.content)) as archive:
            archive.extractall(adapter_dir)
        summary["accuracy_after"] = evaluated.get(info.adapter_version, summary["accuracy_before"])
        summary["adapter_dir"] = str(adapter_dir)
        summary["view_command"] = f"fedlora view {out}"  # the rounds again, once every process has stopped
        summary["phase"] = "done"
        report = {
            "federation": info.model_dump(mode="json"),
            "rounds": [r for r in (await admin.get(f"/federations/{fid}/rounds")).json()],
            "clients": (await admin.get(f"/federations/{fid}/clients")).json(),
            "privacy": (await admin.get(f"/federations/{fid}/privacy")).json(),
            "adapters": (await admin.get(f"/federations/{fid}/adapters")).json(),  # with their evaluations
            "accuracy_per_version": evaluated,
            **{k: v for k, v in summary.items() if k != "phase"},
        }
        (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
        show()
        await admin.aclose()
        return report
    finally:
        cluster.stop()
        await asyncio.to_thread(redis.stop)  # SHUTDOWN, once the cloud has stopped writing: a complete AOF


def _cloud_settings(config: DemoConfig) -> dict[str, Any]:
    """The cloud's settings besides its secrets, port and store, as `fedlora view` will read them again."""
    settings: dict[str, Any] = {"host": "127.0.0.1", "log_json": True}
    if config.model_path is not None:
        settings["model_path"] = str(config.model_path.resolve())
    return settings


async def _at_least(awaitable: Any, n: int) -> bool:
    return bool(await awaitable >= n)


async def _record_evaluation(
    admin: httpx.AsyncClient, fid: str, version: int, evaluation: AdapterEvaluation
) -> None:
    response = await admin.put(
        f"/federations/{fid}/adapters/{version}/evaluation",
        content=evaluation.model_dump_json(exclude_none=True),
        headers={"Content-Type": "application/json"},
    )
    if response.status_code != 200:
        raise LaunchError(
            f"recording the evaluation of version {version}: {response.status_code} {response.text[:200]}"
        )


async def adapter_basis(admin: httpx.AsyncClient, fid: str, version: int, *, seeded: int) -> bytes | None:
    """The basis adapter `version` was trained in, as the cloud serves it; None for the seeded basis."""
    response = await admin.get(f"/federations/{fid}/adapters")
    if response.status_code != 200:
        raise LaunchError(f"listing the adapter versions: {response.status_code} {response.text[:200]}")
    listed = {v.version: v for v in map(AdapterVersion.model_validate, response.json())}
    if version not in listed:
        raise LaunchError(f"the cloud does not list adapter version {version}")
    basis_version = listed[version].basis_version
    if basis_version is None or basis_version == seeded:
        return None
    basis = await admin.get(f"/federations/{fid}/basis/{basis_version}")
    if basis.status_code != 200:
        raise LaunchError(f"basis version {basis_version}: {basis.status_code} {basis.text[:200]}")
    return basis.content


async def _vector(admin: httpx.AsyncClient, fid: str, version: int) -> bytes:
    response = await admin.get(f"/federations/{fid}/adapters/{version}/vector")
    if response.status_code != 200:
        raise LaunchError(f"adapter version {version}: {response.status_code} {response.text[:200]}")
    return response.content
