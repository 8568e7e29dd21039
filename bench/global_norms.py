"""How large an honest global adapter gets: the L2 norm after each round of the demo's federation.

Runs the demo's federation (fedlora/launcher.py `DemoConfig`: four hospitals behind two edges, FFA-LoRA
rank 2 on `value` of MiniLM's last two layers, DP-SGD at epsilon 8, client-level noise z = 0.25 with C = 1,
CKKS) through the simulation, which runs the tiers' own code, and prints each round's global norm beside
the central noise's random walk `z C sqrt(d) / W * sqrt(rounds)` (`d` values, total weight `W`). The
hospital policy's `max_global_norm` default is sized from these figures (docs/operations.md).

    .venv/bin/python bench/global_norms.py [--rounds 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from fedlora.launcher import DemoConfig
from fedlora.simulation import SimulationConfig, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    demo = DemoConfig()
    with tempfile.TemporaryDirectory() as out:
        config = SimulationConfig(
            hospitals=demo.hospitals,
            edges=demo.edges,
            rounds=args.rounds,
            steps=demo.steps,
            batch_size=demo.batch_size,
            learning_rate=demo.learning_rate,
            max_seq_length=demo.max_seq_length,
            max_train_examples=demo.max_train_examples,
            epsilon=demo.epsilon,
            central_noise=demo.central_noise,
            clip_norm=1.0,
            rank=demo.rank,
            layers_to_transform=demo.layers,
            threads=args.threads,
            out_dir=Path(out),
        )
        print("round  values  global L2  max |v|  noise walk z C sqrt(d (t+1)) / W")

        def show(round_: int, vector: np.ndarray) -> None:
            v = vector.astype(np.float64)
            walk = demo.central_noise * math.sqrt(v.size * (round_ + 1)) / demo.hospitals
            print(f"{round_:5d}  {v.size:6d}  {np.linalg.norm(v):9.3f}  {np.abs(v).max():7.3f}  {walk:9.3f}")

        simulate(config, on_global=show)


if __name__ == "__main__":
    main()
