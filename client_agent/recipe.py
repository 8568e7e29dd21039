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
"""

from __future__ import annotations

#: `LocalConfig.head_learning_rate` / `TrainingConfig.head_learning_rate` of the recipe.
HEAD_LEARNING_RATE = 20.0
