"""The adapter layout of a federation, derived from the base model's config alone (no weights, no client code).

The cloud needs the shape of the update vector to check sizes, keep the global adapter and export it; it
builds the model skeleton on torch's meta device and finds the same LoRA targets peft would. A test checks
that this layout equals the one the client's model reports.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from protocol.ffa import HEAD_BIAS, HEAD_WEIGHT, AdapterLayout
from protocol.messages import FederationSpec
from protocol.strategies import strategy_class

_LAYER_INDEX = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


class LayoutError(ValueError):
    """The federation's target modules do not exist in the base model."""


def lora_targets(
    model: nn.Module, target_modules: tuple[str, ...], layers: tuple[int, ...] | None
) -> dict[str, nn.Linear]:
    """Linear layers whose last name part is a target, restricted to `layers` (peft's matching rule)."""
    found: dict[str, nn.Linear] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or name.rsplit(".", 1)[-1] not in target_modules:
            continue
        if layers is not None:
            match = _LAYER_INDEX.search(name)
            if match is None or int(match.group(1)) not in layers:
                continue
        found[name] = module
    return found


def federation_layout(spec: FederationSpec, model_path: str | Path) -> tuple[AdapterLayout, dict[str, int]]:
    """The layout of `spec`'s update vector on the model in `model_path`, and each module's `in_features`."""
    config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    with torch.device("meta"):
        skeleton = AutoModel.from_config(config, add_pooling_layer=False)
    targets = lora_targets(skeleton, spec.target_modules, spec.layers_to_transform)
    if not targets:
        raise LayoutError(
            f"target_modules {list(spec.target_modules)} with layers_to_transform {spec.layers_to_transform} "
            f"match no linear layer of {config.model_type}"
        )
    hidden = int(config.hidden_size)
    layout = AdapterLayout.build(
        lora_out_features={name: layer.out_features for name, layer in targets.items()},
        r_max=spec.r_max,
        head_shapes={HEAD_WEIGHT: (spec.num_labels, hidden), HEAD_BIAS: (spec.num_labels,)},
        lora_in_features={name: layer.in_features for name, layer in targets.items()}
        if strategy_class(spec.strategy).trains_a
        else None,
    )
    return layout, {name: layer.in_features for name, layer in targets.items()}
