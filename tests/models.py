"""Models the tests build: a small random encoder instead of MiniLM, and the project's own inference model
for a global adapter (what an exported adapter must agree with)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel

from client_agent.model import AdapterSpec, FFAClassifier


def encoder_from_config(config: PretrainedConfig, *, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised encoder, dropout off, seeded."""
    config.hidden_dropout_prob = 0.0
    config.attention_probs_dropout_prob = 0.0
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return AutoModel.from_config(config, add_pooling_layer=False)


def global_model_at_rmax(
    encoder: nn.Module,
    spec: AdapterSpec,
    global_vector: np.ndarray,
    *,
    bases: Mapping[str, np.ndarray] | None = None,
) -> FFAClassifier:
    """The project's own inference model for a global adapter: rank `r_max`, every column used, in the
    seeded basis or in `bases` (module -> `A_max`) for a version trained in a re-based one."""
    model = FFAClassifier(encoder, spec, rank=spec.r_max)  # type: ignore[arg-type]
    if bases is not None:
        model.install_basis(bases)
    model.load_global(global_vector)
    model.eval()
    return model
