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
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from protocol.ffa import HEAD_BIAS, HEAD_WEIGHT, AdapterLayout
from protocol.messages import FederationSpec, TaskType
from protocol.strategies import strategy_class

# peft's default layer names (`COMMON_LAYERS_PATTERN`): BERT's `layer.N`, Llama's `layers.N`, GPT-2's `h.N`.
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers?|h|blocks?)\.(\d+)\.")


class LayoutError(ValueError):
    """The federation's target modules do not exist in the base model."""


def linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """`(in_features, out_features)` of a layer peft's LoRA adapts: `nn.Linear`, or GPT-2's `Conv1D` (whose
    weight is stored transposed, `fan_in_fan_out`); None for anything else."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return int(module.weight.shape[0]), int(module.nf)
    return None


def lora_targets(
    model: nn.Module, target_modules: tuple[str, ...], layers: tuple[int, ...] | None
) -> dict[str, tuple[int, int]]:
    """`(in_features, out_features)` of the linear layers whose last name part is a target, restricted to
    `layers` (peft's matching rule)."""
    found: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        shape = linear_shape(module)
        if shape is None or name.rsplit(".", 1)[-1] not in target_modules:
            continue
        if layers is not None:
            match = _LAYER_INDEX.search(name)
            if match is None or int(match.group(1)) not in layers:
                continue
        found[name] = shape
    return found


def federation_layout(spec: FederationSpec, model_path: str | Path) -> tuple[AdapterLayout, dict[str, int]]:
    """The layout of `spec`'s update vector on the model in `model_path`, and each module's `in_features`."""
    config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    causal = spec.task_type is TaskType.CAUSAL_LM
    with torch.device("meta"):
        # Module names as the hospital's model holds them: a causal LM's include its base prefix (`model.`).
        skeleton = (
            AutoModelForCausalLM.from_config(config)
            if causal
            else AutoModel.from_config(config, add_pooling_layer=False)
        )
    targets = lora_targets(skeleton, spec.target_modules, spec.layers_to_transform)
    if not targets:
        raise LayoutError(
            f"target_modules {list(spec.target_modules)} with layers_to_transform {spec.layers_to_transform} "
            f"match no linear layer of {config.model_type}"
        )
    in_features = {name: shape[0] for name, shape in targets.items()}
    layout = AdapterLayout.build(
        lora_out_features={name: shape[1] for name, shape in targets.items()},
        r_max=spec.r_max,
        # A causal LM's output layer is its own (frozen) one; a classifier's head trains.
        head_shapes=None
        if causal
        else {HEAD_WEIGHT: (spec.num_labels, int(config.hidden_size)), HEAD_BIAS: (spec.num_labels,)},
        lora_in_features=in_features if strategy_class(spec.strategy).trains_a else None,
    )
    return layout, in_features
