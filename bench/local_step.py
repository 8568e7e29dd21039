"""Local training step time on the real MiniLM: DP-SGD against no DP, FFA-LoRA against vanilla LoRA; and
the same DP / no-DP ratio on a decoder (a causal LM with FFA-LoRA, `client_agent.causal_lm`).

One step is forward + backward + optimiser step on a batch of 32 sequences of 64 tokens through all six
layers (LoRA on query and value of every layer, rank 8), measured in one run with the same inputs.
DP-SGD uses Opacus ("hooks" per-sample gradients, clipping, noise). Prints a table and the ratios.

The decoder row times a small Llama built from a config (random weights: step time does not depend on them,
and no decoder's weights ship with the project): FFA-LoRA rank 8 on `q_proj`/`v_proj` of every layer, the
loss on the second half of each sequence (the "answer"), with the agent's own batch loss.

    .venv/bin/python bench/local_step.py [--steps 5] [--threads 2] [--only encoder|decoder]
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

from client_agent.causal_lm import FFACausalLM, causal_lm_loss
from client_agent.model import AdapterSpec, FFAClassifier, default_model_path, load_encoder

#: The decoder of the decoder row: Llama's architecture at a small size (about 20 M parameters, 16 M of them
#: the untied input and output embeddings).
DECODER = {
    "vocab_size": 32000,
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}


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


def build_decoder() -> FFACausalLM:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    spec = AdapterSpec(num_labels=2, target_modules=("q_proj", "v_proj"), r_max=8)
    return FFACausalLM(LlamaForCausalLM(LlamaConfig(**DECODER)).eval(), spec, rank=8)


def decoder_batch(*, batch: int, seq: int) -> list[torch.Tensor]:
    """Random token ids, no padding, the loss on the second half of each sequence (the "answer")."""
    torch.manual_seed(0)
    ids = torch.randint(1000, 20000, (batch, seq))
    answer = torch.zeros(batch, seq, dtype=torch.long)
    answer[:, seq // 2 :] = 1
    return [ids, torch.ones(batch, seq, dtype=torch.long), answer]


def decoder_trainer(*, dp: bool, rows: list[torch.Tensor]) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A fresh decoder and its optimiser; with `dp`, wrapped by Opacus as the agent trains it."""
    model = build_decoder()
    optimizer: torch.optim.Optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    if not dp:
        return model.train(), optimizer
    loader = DataLoader(TensorDataset(*rows), batch_size=len(rows[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module, optimizer, _ = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=False,
            grad_sample_mode="hooks",
        )
    return module.train(), optimizer


def decoder_step(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, rows: list[torch.Tensor]
) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        causal_lm_loss(module, rows).backward()
    optimizer.step()
    return time.perf_counter() - start


def decoder_row(console: Console, args: argparse.Namespace) -> None:
    """DP and non-DP steps alternate on two copies of the decoder, so that other load on the machine falls
    on both alike."""
    rows = decoder_batch(batch=args.batch, seq=args.seq)
    trainers = {dp: decoder_trainer(dp=dp, rows=rows) for dp in (False, True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.steps + 1):  # the first step warms up allocators and hooks
        for dp, (module, optimizer) in trainers.items():
            times[dp].append(decoder_step(module, optimizer, rows))
    medians = {dp: statistics.median(values[1:]) for dp, values in times.items()}
    for dp, median in medians.items():
        console.print(f"decoder   dp={dp!s:5s} median {median:.3f} s over {args.steps} steps")
    model = build_decoder()
    trainable = sum(p.numel() for p in model.trainable_parameters())
    total = sum(p.numel() for p in model.parameters())
    table = Table(
        title=f"Decoder (Llama, {DECODER['num_hidden_layers']} layers, hidden {DECODER['hidden_size']}, "
        f"{total / 1e6:.1f} M parameters) step time, batch {args.batch}, sequence {args.seq}, "
        f"{args.threads} threads"
    )
    for column in ("method", "trainable params", "no DP (s)", "DP-SGD (s)", "DP / no DP"):
        table.add_column(column, justify="right")
    plain, private = medians[False], medians[True]
    table.add_row("FFA-LoRA", f"{trainable:,}", f"{plain:.3f}", f"{private:.3f}", f"{private / plain:.2f}x")
    console.print(table)
    console.print(f"decoder DP-SGD / no DP step time: {private / plain:.2f}x")


def encoder_rows(console: Console, args: argparse.Namespace) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--only", choices=("encoder", "decoder"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    if args.only != "decoder":
        encoder_rows(console, args)
    if args.only != "encoder":
        decoder_row(console, args)


if __name__ == "__main__":
    main()
