"""Where a simulated round's hospitals run: one after another in the simulation's process, or in parallel
in Ray workers (the engine Flower's simulation uses), on this machine or on a Ray cluster.

Both engines run the same `HospitalSite.work` on the same `HospitalJob`s; a job's seeded draws depend on
(seed, round, hospital) only, so the engines give the same uploads and the simulation the same global
vector. The driver folds the uploads in the hospitals' order whatever order they finish in.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

import numpy as np

if TYPE_CHECKING:  # the hospitals' modules load torch: only the engines that run hospitals import them
    from client_agent.train import Features
    from fedlora.simulation_hospitals import HospitalJob, HospitalOutcome, HospitalSettings, HospitalSite

EngineName = Literal["process", "ray"]
#: Above this many hospitals `fedlora simulate` runs them through Ray unless told otherwise: below it,
#: Ray's start and each worker's load of the base model cost more than running the hospitals in turn saves.
RAY_FROM_HOSPITALS = 16
PROBE_TIMEOUT_S = 5.0
INSTALL_HINT = "pip install 'ray>=2.9' (it comes with `pip install -e .`)"


class EngineError(ValueError):
    """The simulation's hospitals cannot run where they were asked to."""


class RayNotInstalledError(EngineError):
    def __init__(self, cause: ImportError) -> None:
        super().__init__(
            f"the ray engine needs the `ray` package, which is not installed ({cause}): {INSTALL_HINT}"
        )


class RayUnreachableError(EngineError):
    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"ray_address {address!r} is unreachable: {reason}")
        self.address = address


class HospitalEngine(Protocol):
    def run(self, jobs: Sequence[HospitalJob], global_vector: np.ndarray) -> Iterator[HospitalOutcome]:
        """Every job of a round from `global_vector`; the outcomes as they finish."""
        ...

    def close(self) -> None: ...


class InProcessEngine:
    """The hospitals one after another on the simulation's own site (its model, its scheme)."""

    def __init__(self, site: HospitalSite) -> None:
        self._site = site

    def run(self, jobs: Sequence[HospitalJob], global_vector: np.ndarray) -> Iterator[HospitalOutcome]:
        for job in jobs:
            yield self._site.work(job, global_vector)

    def close(self) -> None:
        pass


def default_engine(hospitals: int, *, ray_address: str | None) -> EngineName:
    """`fedlora simulate`'s engine when none is named: Ray when a cluster is named (`ray_address` or
    RAY_ADDRESS) or above `RAY_FROM_HOSPITALS` hospitals, else this process."""
    if cluster_address(ray_address) is not None or hospitals > RAY_FROM_HOSPITALS:
        return "ray"
    return "process"


def cluster_address(address: str | None) -> str | None:
    """The Ray cluster a run names: `address`, else RAY_ADDRESS; None: a new instance on this machine."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_ray(address: str | None) -> ModuleType:
    """Ray, once it is installed and the cluster the run names answers: the simulation calls it before its
    data and model load, so that either failure comes first."""
    ray = import_ray()
    target = cluster_address(address)
    if target is not None:
        probe(target)
    return ray


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as e:
        raise RayNotInstalledError(e) from e
    return ray


def probe(address: str, *, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Refuse a cluster address nothing answers at, before `ray.init` waits on it (it retries for
    minutes). `auto` and `local` name no host and are left to Ray."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise RayUnreachableError(address, f"not host:port ({e})") from e
    if not host or port is None:
        raise RayUnreachableError(address, "not host:port (or ray://host:port)")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise RayUnreachableError(address, f"no answer at {host}:{port} within {timeout:g} s ({e})") from e


class RayEngine:
    """A pool of Ray actors, each with its own `HospitalSite` (its copy of the base model) and the
    encoded examples of the hospitals it serves: hospital `i` always runs on worker `i % workers`, so a
    hospital's data travels once, when the pool starts, and only its job and the global vector each round.

    Each actor asks Ray for `threads` CPUs (Ray sets its OMP_NUM_THREADS to that) and sets torch's threads
    to that, so the pool never asks more of a machine than it has; by default there are as many workers as
    the cluster's CPUs hold. A named cluster (`address`, else RAY_ADDRESS) must answer first. A Ray session
    already open in this process (a test module's, a notebook's) is used and left open; otherwise the
    engine opens one (on the named cluster, or a new one on this machine) and closes it.
    """

    def __init__(
        self,
        settings: HospitalSettings,
        features: Sequence[Features],
        *,
        address: str | None = None,
        workers: int | None = None,
    ) -> None:
        ray = self._ray = check_ray(address)
        self._owns_session = not ray.is_initialized()
        if self._owns_session:
            _connect(ray, cluster_address(address))
        threads = settings.threads
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if workers is not None and workers * threads > cpus:
            # Ray would hold the actors it cannot place until CPUs appear: on a fixed cluster, forever.
            raise EngineError(
                f"workers {workers} of {threads} thread(s) each need {workers * threads} CPUs; "
                f"the Ray cluster has {cpus}"
            )
        count = min(workers or max(1, cpus // threads), len(features))
        actor = ray.remote(num_cpus=threads)(_HospitalWorker).options(**_device_options(ray, count))
        self._workers = [
            actor.remote(settings, {i: f for i, f in enumerate(features) if i % count == w})
            for w in range(count)
        ]

    def run(self, jobs: Sequence[HospitalJob], global_vector: np.ndarray) -> Iterator[HospitalOutcome]:
        ray = self._ray
        shared = ray.put(global_vector)
        pending = [self._workers[job.index % len(self._workers)].work.remote(job, shared) for job in jobs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    def close(self) -> None:
        for worker in self._workers:
            self._ray.kill(worker)
        self._workers = []
        if self._owns_session:
            self._ray.shutdown()


def _connect(ray: Any, target: str | None) -> None:
    try:
        ray.init(address=target or "local", include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, TimeoutError) as e:
        raise RayUnreachableError(target or "local", str(e)) from e


class _HospitalWorker:
    """One Ray actor's hospitals (a plain class: `RayEngine` makes it remote with its resources)."""

    def __init__(self, settings: HospitalSettings, features: Mapping[int, Features]) -> None:
        import torch

        from fedlora.simulation_hospitals import HospitalSite

        torch.set_num_threads(settings.threads)
        self._site = HospitalSite.build(settings, features)

    def work(self, job: HospitalJob, global_vector: np.ndarray) -> HospitalOutcome:
        return self._site.work(job, global_vector)


def _device_options(ray: ModuleType, count: int) -> dict[str, Any]:
    """The workers train where the driver's `FEDLORA_DEVICE` says, whatever the environment their Ray session
    started with: the variable travels in their runtime environment, and a CUDA device is shared among them
    as a fraction of the cluster's GPUs (Ray hides the GPUs from an actor that asks for none)."""
    from client_agent.device import VARIABLE, training_device

    options: dict[str, Any] = {}
    if VARIABLE in os.environ:
        options["runtime_env"] = {"env_vars": {VARIABLE: os.environ[VARIABLE]}}
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if training_device().type == "cuda" and gpus > 0:
        options["num_gpus"] = min(1.0, gpus / count)
    return options
