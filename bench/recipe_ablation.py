"""Why short IID federations end at the majority class, and which change of recipe moves them off it.

Runs FFA-LoRA federations on MiniLM's cached features with the agent's own `train_local` (DP-SGD through
Opacus) and the plain mean of the hospitals' deltas (FFA-LoRA's aggregate; no encryption, no central noise,
which would not change the mean), and prints per round the test accuracy, the share of inputs predicted as
class 1, the head's bias gap `b1 - b0` and the norm of its weight gap `|w1 - w0|`: whether the head learns
the class prior or the features. It also prints the mean L2 norm of one hospital's delta, split into the
adapter's `B` and the head: what a client-level clip (the demo's: norm 1) scales down.

    .venv/bin/python bench/recipe_ablation.py paper iid iid,head_lr=20 iid,bias=0.33 iid,lr=5

`paper` is the FFA-LoRA tables' federation (3 hospitals, 1,500 snippets, 2 rounds of 8 steps of batch 64,
rank 8, epsilon 6, 400 test snippets), `demo` the demo's (4 hospitals, 8,000 snippets, 3 rounds of 16
steps of batch 256, rank 2, epsilon 8, 1,000 test snippets), `quick` a smoke size. Each further argument
is a partition (iid, mild, severe) and options: `lr` (the adapter's and the bias' rate), `head_lr` (the head
weight's rate; default: the adapter's, the old recipe), `eps` (0: no DP), `bias` (the head's initial `b1 -
b0`, e.g. the log-odds of the class prior), `seed`, `rounds` (fewer than the setting's). Batches and DP noise come from the seed so that a row
repeats (never so in the services). Figures in docs/results.md, "A recipe that learns".
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoTokenizer

from client_agent.data import partition, task_split
from client_agent.model import AdapterSpec, FFAClassifier, default_model_path, load_encoder
from client_agent.train import (
    DPSettings,
    Features,
    LocalConfig,
    PrivacyHistory,
    encode,
    evaluate,
    train_local,
)
from protocol.ffa import HEAD_BIAS, HEAD_WEIGHT


@dataclass(frozen=True)
class Federation:
    train: int
    test: int
    hospitals: int
    rounds: int
    steps: int
    batch: int
    rank: int
    epsilon: float


SETTINGS = {
    "paper": Federation(1500, 400, 3, 2, 8, 64, 8, 6.0),
    "demo": Federation(8000, 1000, 4, 3, 16, 256, 2, 8.0),
    "quick": Federation(60, 40, 2, 1, 2, 16, 2, 8.0),
}


def _features(model: FFAClassifier, fed: Federation, seed: int) -> tuple[Features, Features]:
    train, test = task_split(
        "rt_sentiment", seed=seed, max_train_examples=fed.train, max_test_examples=fed.test
    )
    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    return tuple(  # type: ignore[return-value]
        encode(model, tokenizer, d.texts, d.labels, max_length=32) for d in (train, test)
    )


def run(row: str, fed: Federation, default_seed: int) -> None:
    kind, *options = row.split(",")
    opts = {k: float(v) for k, v in (o.split("=") for o in options)}
    seed = int(opts.get("seed", default_seed))
    epsilon = opts.get("eps", fed.epsilon)
    spec = AdapterSpec(
        num_labels=2,
        target_modules=("value",),
        layers_to_transform=(4, 5),
        r_max=fed.rank,
        alpha=8.0,
        seed=seed,
    )
    model = FFAClassifier(load_encoder(default_model_path()), spec, rank=fed.rank)
    train, test = _features(model, fed, seed)
    parts = partition(train.labels.numpy(), kind=kind, n_clients=fed.hospitals, seed=seed)
    shares = [Features(train.hidden[p], train.mask[p], train.labels[p]) for p in map(torch.as_tensor, parts)]
    layout = model.layout
    start = layout.unflatten(layout.initial_vector(seed=seed, basis_version=0), rank=fed.rank)
    start[HEAD_BIAS] = np.array([-opts.get("bias", 0.0) / 2, opts.get("bias", 0.0) / 2])
    vector = layout.flatten(start)
    histories = [PrivacyHistory() for _ in shares]
    started = time.perf_counter()
    rounds = int(opts.get("rounds", fed.rounds))
    n_b = sum(entry.size for entry in layout.lora)
    for round_ in range(rounds):
        deltas = []
        for index, (share, history) in enumerate(zip(shares, histories, strict=True)):
            config = LocalConfig(
                steps=fed.steps,
                batch_size=fed.batch,
                learning_rate=opts.get("lr", 2.0),
                head_learning_rate=opts.get("head_lr"),
                insecure_seed=seed * 1000 + round_ * 10 + index,
                progress=False,
                dp=DPSettings(epsilon=epsilon, rounds=fed.rounds) if epsilon > 0 else None,
            )
            deltas.append(
                train_local(model, share, global_vector=vector, config=config, history=history).delta
            )
        b_norm = float(np.mean([np.linalg.norm(d[:n_b]) for d in deltas]))
        head_norm = float(np.mean([np.linalg.norm(d[n_b:]) for d in deltas]))
        vector = vector + np.mean(deltas, axis=0)
        model.load_global(vector)
        _, accuracy = evaluate(model, test)
        with torch.no_grad():
            predicted = torch.cat(
                [
                    model.forward_from(test.hidden[s : s + 256], test.mask[s : s + 256])
                    for s in range(0, len(test), 256)
                ]
            ).argmax(-1)
        head = layout.unflatten(vector, rank=fed.rank)
        print(
            f"{row:28s} round {round_ + 1}: accuracy {accuracy:.3f}  predicted class 1 "
            f"{float(predicted.float().mean()):.3f}  b1-b0 {head[HEAD_BIAS][1] - head[HEAD_BIAS][0]:+.3f}  "
            f"|w1-w0| {np.linalg.norm(head[HEAD_WEIGHT][1] - head[HEAD_WEIGHT][0]):.2f}  "
            f"hospital |delta|: B {b_norm:.2f} head {head_norm:.2f}",
            flush=True,
        )
    majority = float(np.bincount(test.labels.numpy()).max() / len(test))
    print(f"{row:28s} majority class {majority:.3f}, {time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("setting", nargs="?", choices=sorted(SETTINGS), default="paper")
    parser.add_argument("rows", nargs="*", default=["iid", "iid,head_lr=20"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    print(f"fedlora recipe ablation ({args.setting}); load average {os.getloadavg()}")
    for row in args.rows:
        run(row, SETTINGS[args.setting], args.seed)


if __name__ == "__main__":
    main()
