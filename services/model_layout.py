"""The adapter layout of a federation, derived from the base model's config alone (no weights, no client code).

The cloud needs the shape of the update vector to check sizes, keep the global adapter and export it; it
builds the model skeleton on torch's meta device and finds the same LoRA targets peft would. A test checks
that this layout equals the one the client's model reports.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from protocol.ffa import HEAD_BIAS, HEAD_WEIGHT, AdapterLayout
from protocol.messages import FederationSpec, TaskType
from protocol.strategies import strategy_class


class LayoutError(ValueError):
    """The federation's adapter does not fit the base model; `field` names the spec's field at fault."""

    def __init__(self, message: str, *, field: str = "target_modules") -> None:
        super().__init__(message)
        self.field = field


def linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """`(in_features, out_features)` of a layer peft's LoRA adapts: `nn.Linear`, or GPT-2's `Conv1D` (whose
    weight is stored transposed, `fan_in_fan_out`); None for anything else."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return int(module.weight.shape[0]), int(module.nf)
    return None


def lora_targets(
    model: nn.Module, target_modules: tuple[str, ...], layers: tuple[int, ...] | None, *, num_layers: int
) -> dict[str, tuple[int, int]]:
    """`(in_features, out_features)` of the modules peft adapts for `target_modules` and `layers` (peft's own
    matching rule, `check_target_module_exists`: a whole module name, a dotted suffix, and a whole name
    before `layers`), in `model`'s order. Raises `LayoutError` naming the field and the value for a layer
    index outside the model's `num_layers`, a target that matches nothing, and a target that matches a
    module FFA-LoRA cannot adapt (an embedding, a whole attention block): the hospital and the cloud then
    refuse the same specs and agree on the layout of every other."""
    outside = [index for index in layers or () if not 0 <= index < num_layers]
    if outside:
        raise LayoutError(
            f"layers_to_transform {list(layers or ())} outside the model's {num_layers} layers: {outside}",
            field="layers_to_transform",
        )
    modules = list(model.named_modules())
    found: dict[str, tuple[int, int]] = {}
    for target in target_modules:
        config = LoraConfig(target_modules=[target], layers_to_transform=list(layers) if layers else None)
        matched = [(name, module) for name, module in modules if check_target_module_exists(config, name)]
        if not matched:
            raise LayoutError(
                f"target_modules {list(target_modules)}: {target!r} matches no module of the model "
                f"(layers_to_transform {layers})"
            )
        for name, module in matched:
            shape = linear_shape(module)
            if shape is None:
                raise LayoutError(
                    f"target_modules {list(target_modules)}: {target!r} matches {name!r}, a "
                    f"{type(module).__name__}: "
                    "FFA-LoRA adapts only linear layers (nn.Linear, GPT-2's Conv1D)"
                )
            found[name] = shape
    order = {name: i for i, (name, _) in enumerate(modules)}
    return dict(sorted(found.items(), key=lambda item: order[item[0]]))


def federation_layout(spec: FederationSpec, model_path: str | Path) -> tuple[AdapterLayout, dict[str, int]]:
    """The layout of `spec`'s update vector on the model in `model_path`, and each module's `in_features`."""
    config = AutoConfig.from_pretrained(model_path, local_files_only=True)
    causal = spec.task_type is TaskType.CAUSAL_LM
    try:
        with torch.device("meta"):
            # Module names as the hospital's model holds them: a causal LM's include its base prefix (`model.`).
            skeleton = (
                AutoModelForCausalLM.from_config(config)
                if causal
                else AutoModel.from_config(config, add_pooling_layer=False)
            )
    except (TypeError, ValueError) as e:
        # A decoder has no pooling layer to leave out (TypeError); a config with no causal head (ValueError).
        raise LayoutError(
            f"task_type {spec.task_type.value!r} does not fit the base model ({config.model_type}): {e}",
            field="task_type",
        ) from e
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and spec.training.max_seq_length > int(positions):
        raise LayoutError(
            f"training.max_seq_length {spec.training.max_seq_length} exceeds the base model's {positions} "
            "positions (max_position_embeddings)",
            field="training.max_seq_length",
        )
    targets = lora_targets(
        skeleton,
        spec.target_modules,
        spec.layers_to_transform,
        num_layers=int(config.num_hidden_layers),
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
