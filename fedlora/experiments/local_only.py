"""Local-only training: each hospital of a simulated federation trains alone, with the agent's own
`train_local`, on the same share of the same data the simulation would give it.

The data path is the simulation's (`fedlora.simulation.simulate`): the seeded `task_split`, the
de-identification, the seeded `partition`, MiniLM's frozen lower layers encoded once. A hospital starts
from adapter version 0, runs `rounds` rounds of `steps` steps with the simulation's per-round seeds (its
round `r` is seeded as the simulation's), keeps its own adapter between rounds (there is nobody to
average with), and its final adapter is evaluated on the federation's test set.
"""

from __future__ import annotations

import warnings

import torch

from client_agent.train import Features, LocalConfig, evaluate, train_local
from fedlora.simulation import PreparedRun, SimulationConfig, hospital_names, prepared_run
from fedlora.simulation_rounds import training_seed


def local_only(config: SimulationConfig) -> list[tuple[str, float]]:
    """(hospital, test accuracy after training alone) for every hospital of the federation."""
    with warnings.catch_warnings():
        # transformers warns on every pass through the encoder; the accuracies are what this returns.
        warnings.simplefilter("ignore")
        return _train_alone(config)


def _train_alone(config: SimulationConfig) -> list[tuple[str, float]]:
    return alone_on(config, prepared_run(config))


def alone_on(config: SimulationConfig, run: PreparedRun) -> list[tuple[str, float]]:
    """`local_only` on `run`, already prepared from `config`."""
    model, train_features, test_features, start = run.model, run.train, run.test, run.start
    results = []
    for index, (name, part) in enumerate(zip(hospital_names(config.hospitals), run.parts, strict=True)):
        idx = torch.as_tensor(part)
        own = Features(train_features.hidden[idx], train_features.mask[idx], train_features.labels[idx])
        vector = start.copy()
        for round_ in range(config.rounds):
            local = LocalConfig(
                steps=config.steps,
                batch_size=min(config.batch_size, len(own)),
                learning_rate=config.learning_rate,
                head_learning_rate=config.head_learning_rate,
                # An experiment repeats exactly; this baseline trains without DP, so the seed protects nothing.
                insecure_seed=training_seed(config.seed, round_=round_, hospital=index),
                threads=config.threads,
                progress=False,
            )
            vector = vector + train_local(model, own, global_vector=vector, config=local).delta
        model.load_global(vector)
        results.append((name, evaluate(model, test_features)[1]))
    return results
