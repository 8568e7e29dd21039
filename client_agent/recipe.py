"""The training recipe's constants that every runner of a federation shares (the demo, the simulation and
its experiments, a hospital's local pre-flight); no torch here, so the CLI can read them cheaply.

Why the head has its own learning rate: the head reads a mean-pooled, L2-normalised embedding, whose
coordinates are of order `1 / sqrt(hidden)`, and most of whose length is a direction shared by every
sentence. At `B`'s learning rate the head's weight learns that shared direction (which acts as a second
class bias) long before it learns the directions that separate the classes, so a short IID federation
predicts the majority class for every input. A larger rate for the head alone moves the decision off the
class prior within the first round; it changes no DP accounting (per-example clipping and the noise act on
the gradients, before any rate). The measurements that chose it are in docs/results.md, "A recipe that
learns".

Why that rate falls as the DP noise grows: DP-SGD adds Gaussian noise of deviation `sigma * C` to the sum of
a batch's clipped gradients and divides by the expected batch, so each step adds to every coordinate of the
head's weight noise of deviation `rate * sigma * C / batch`. The rate of 20 was measured to learn where
`sigma / batch` is 0.0065 (the yardstick's federation: sigma 0.83, batches of 128); on a small federation at
epsilon 1 (sigma 2.6, batches of 64: 0.040) the full rate put six times that noise on each step of the head
and ended below the class prior. So the head's rate keeps the noise per step at most what it was where the
rate was measured: `rate * min(1, HEAD_NOISE_REFERENCE / (sigma / batch))`, never below the adapter's rate
(the old recipe) unless the head's own rate is lower; without DP it is the full rate. `sigma / batch` is the
noise relative to the clip norm `C`, which bounds the signal too, so the rule holds at any `C`. Under Adam,
whose steps are scaled by the gradients' own size, the rate is left as set. A rate falling with the square of the noise (which holds
SGD's stationary excess loss fixed instead) was measured too and learned less on an IID federation; the
measurements are in docs/results.md, "The head's rate under DP noise".
"""

from __future__ import annotations

#: `LocalConfig.head_learning_rate` / `TrainingConfig.head_learning_rate` of the recipe.
HEAD_LEARNING_RATE = 20.0

#: The DP noise relative to the batch, `noise multiplier / expected batch`, at and below which the head
#: keeps its full rate; above it the rate falls in proportion (see the module's docstring).
HEAD_NOISE_REFERENCE = 0.0065


def head_rate_under_noise(
    head_rate: float, adapter_rate: float, *, noise_multiplier: float, expected_batch: float
) -> float:
    """The head's learning rate for a DP-SGD run with this noise multiplier and expected batch: the full
    `head_rate` while `noise_multiplier / expected_batch` is at most `HEAD_NOISE_REFERENCE`, smaller in
    proportion above it, and never below `adapter_rate` (a `head_rate` already at or below it is kept)."""
    if head_rate <= adapter_rate or noise_multiplier <= 0:
        return head_rate
    noise = noise_multiplier / max(expected_batch, 1.0)
    return max(adapter_rate, head_rate * min(1.0, HEAD_NOISE_REFERENCE / noise))
