"""When to stop: the federation's validation loss, and whether it has stopped moving.

Each hospital reports the loss of the round's *starting* adapter on data it holds out and never trains on;
the round's figure is their mean weighted by held-out examples. The federation has converged when the
last `patience` changes between consecutive rounds' figures are all below `min_delta` (seed 001's stop
rule).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from protocol.messages import MAX_EXAMPLES, Contribution, ConvergenceConfig


def round_validation_loss(contributions: Sequence[Contribution]) -> float | None:
    """The example-weighted mean of the reported validation losses; None if nobody reported one.

    A line stating more held-out examples than `MAX_EXAMPLES` (an edge refuses such an upload; one that
    slipped in, from an edge without the bound) is left out of the mean: its count as a float overflows, and
    the close that computes this must not fail for one hospital's report."""
    reported = [
        (c.validation_loss, c.validation_examples or 1)
        for c in contributions
        if c.validation_loss is not None and (c.validation_examples or 1) <= MAX_EXAMPLES
    ]
    if not reported:
        return None
    return sum(loss * n for loss, n in reported) / sum(n for _, n in reported)


def converged(history: Sequence[tuple[int, float]], config: ConvergenceConfig) -> str | None:
    """Why the federation has converged after `history` (round, loss; oldest first), or None."""
    if len(history) < config.patience + 1:
        return None
    recent = [loss for _, loss in history[-(config.patience + 1) :]]
    changes = [abs(b - a) for a, b in itertools.pairwise(recent)]
    if max(changes) >= config.min_delta:
        return None
    first, last = history[-(config.patience + 1)][0], history[-1][0]
    return (
        f"converged: the validation loss moved less than {config.min_delta:g} in each of the {config.patience} "
        f"round(s) from round {first} to round {last} (last {recent[-1]:.4f})"
    )
