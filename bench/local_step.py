"""Local training step time on the real MiniLM: DP-SGD against no DP, FFA-LoRA against vanilla LoRA.

One step is forward + backward + optimiser step on a batch of 32 sequences of 64 tokens through all six
layers (LoRA on query and value of every layer, rank 8), measured in one run with the same inputs.
DP-SGD uses Opacus ("hooks" per-sample gradients, clipping, noise). Prints a table and the ratios.

    .venv/bin/python bench/local_step.py [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import torch.nn.functional as F  # noqa: N812
from opacus import PrivacyEngine
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, TensorDataset

from client_agent.model import AdapterSpec, FFAClassifier, default_model_path, load_encoder


def build(vanilla: bool) -> FFAClassifier:
    model = FFAClassifier(load_encoder(default_model_path()), AdapterSpec(num_labels=2, r_max=8), rank=8)
    if vanilla:
        for layer in model.lora_layers().values():
            layer.lora_A["default"].weight.requires_grad_(True)
    return model


def time_steps(model: FFAClassifier, *, dp: bool, steps: int, batch: int, seq: int) -> list[float]:
    torch.manual_seed(0)
    ids = torch.randint(1000, 20000, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    labels = torch.randint(0, 2, (batch,))
    hidden = model.embed_frozen(ids, mask)  # split layer 0: the embeddings only, as in training
    loader = DataLoader(TensorDataset(hidden, mask, labels), batch_size=batch)
    optimizer: torch.optim.Optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    module: torch.nn.Module = model
    if dp:
        model.train()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = PrivacyEngine()
            module, optimizer, loader = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=1.0,
                max_grad_norm=1.0,
                poisson_sampling=False,
                grad_sample_mode="hooks",
            )
    module.train()
    times = []
    x, m, y = next(iter(loader))
    for _ in range(steps + 1):  # the first step warms up allocators and hooks
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            F.cross_entropy(module(x, m), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    if dp:
        module._close()  # type: ignore[operator]
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    results: dict[tuple[str, bool], float] = {}
    trainable: dict[str, int] = {}
    for name, vanilla in (("FFA-LoRA", False), ("LoRA", True)):
        model = build(vanilla)
        trainable[name] = sum(p.numel() for p in model.trainable_parameters())
        for dp in (False, True):
            times = time_steps(model, dp=dp, steps=args.steps, batch=args.batch, seq=args.seq)
            results[(name, dp)] = statistics.median(times)
            console.print(
                f"{name:9s} dp={dp!s:5s} median {results[(name, dp)]:.3f} s over {len(times)} steps"
            )
    table = Table(title=f"MiniLM step time, batch {args.batch}, sequence {args.seq}, {args.threads} threads")
    for column in ("method", "trainable params", "no DP (s)", "DP-SGD (s)", "DP / no DP"):
        table.add_column(column, justify="right")
    for name in ("FFA-LoRA", "LoRA"):
        plain, dp = results[(name, False)], results[(name, True)]
        table.add_row(name, f"{trainable[name]:,}", f"{plain:.3f}", f"{dp:.3f}", f"{dp / plain:.2f}x")
    console.print(table)
    console.print(
        f"FFA-LoRA / LoRA step time: no DP {results[('FFA-LoRA', False)] / results[('LoRA', False)]:.2f}x, "
        f"DP-SGD {results[('FFA-LoRA', True)] / results[('LoRA', True)]:.2f}x"
    )


if __name__ == "__main__":
    main()
