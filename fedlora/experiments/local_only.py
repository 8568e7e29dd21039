"""Local-only training: each hospital of a simulated federation trains alone, with the agent's own
`train_local`, on the same share of the same data the simulation would give it.

The data path is the simulation's (`fedlora.simulation.simulate`): the seeded `task_split`, the
de-identification, the seeded `partition`, MiniLM's frozen lower layers encoded once. A hospital starts
from adapter version 0, runs `rounds` rounds of `steps` steps with the simulation's per-round seeds (its
round `r` is seeded as the simulation's), keeps its own adapter between rounds (there is nobody to
average with), and its final adapter is evaluated on the federation's test set. `private` trains with
DP-SGD at the federation's example-level budget over all its rounds, as its hospital would in the
federation (its example count is released nowhere, so the sample rate uses the true count).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

from client_agent.model import FFAClassifier
from client_agent.train import DPSettings, Features, LocalConfig, PrivacyHistory, evaluate, train_local
from fedlora.simulation import PreparedRun, SimulationConfig, hospital_names, prepared_run
from fedlora.simulation_rounds import training_seed

T = TypeVar("T")


def local_only(config: SimulationConfig) -> list[tuple[str, float]]:
    """(hospital, test accuracy after training alone) for every hospital of the federation."""
    return each_alone(config, read=lambda name, model, test: (name, evaluate(model, test)[1]))


def each_alone(
    config: SimulationConfig, *, read: Callable[[str, FFAClassifier, Features], T], private: bool = False
) -> list[T]:
    """`read(hospital, model, test set)` for every hospital in turn, the model holding the adapter that
    hospital trained alone (one model object, reloaded for the next hospital)."""
    with warnings.catch_warnings():
        # transformers and Opacus warn on every pass; the figures are what `read` returns.
        warnings.simplefilter("ignore")
        return _train_alone(config, read=read, private=private)


def alone_on(config: SimulationConfig, run: PreparedRun) -> list[tuple[str, float]]:
    """`local_only` on `run`, already prepared from `config`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _train_alone(
            config, read=lambda name, model, test: (name, evaluate(model, test)[1]), private=False, run=run
        )


def _train_alone(
    config: SimulationConfig,
    *,
    read: Callable[[str, FFAClassifier, Features], T],
    private: bool,
    run: PreparedRun | None = None,
) -> list[T]:
    run = run if run is not None else prepared_run(config)
    model, train_features, test_features, start = run.model, run.train, run.test, run.start
    dp = (
        DPSettings(
            epsilon=config.epsilon,
            delta=config.delta,
            max_grad_norm=config.max_grad_norm,
            rounds=config.rounds,
        )
        if private and config.epsilon is not None
        else None
    )
    results = []
    for index, (name, part) in enumerate(zip(hospital_names(config.hospitals), run.parts, strict=True)):
        own = train_features.subset(part)
        vector, history = start.copy(), PrivacyHistory()
        for round_ in range(config.rounds):
            seed = training_seed(config.seed, round_=round_, hospital=index)
            local = LocalConfig(
                steps=config.steps,
                batch_size=min(config.batch_size, len(own)),
                learning_rate=config.learning_rate,
                head_learning_rate=config.head_learning_rate,
                # An experiment repeats exactly; without DP the seed protects nothing, with DP only an
                # insecure_reproducible run draws its noise from it.
                insecure_seed=seed if dp is None or config.insecure_reproducible else None,
                threads=config.threads,
                progress=False,
                dp=dp,
            )
            result = train_local(model, own, global_vector=vector, config=local, history=history)
            vector = vector + result.delta
        model.load_global(vector)
        results.append(read(name, model, test_features))
    return results
