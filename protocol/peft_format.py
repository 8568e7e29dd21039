"""A global FFA-LoRA adapter as a standard PEFT adapter: `adapter_config.json` + `adapter_model.safetensors`.

Built from the flat global vector and the public basis alone, so any tier can produce it without torch.
The adapter has rank `r_max`: `A` is `A_max` rebuilt from the seed and `B` is the global padded `B`, with
`lora_alpha = alpha` so that peft's scaling `lora_alpha / r_max` is the federation's fixed scaling.
A classification head is saved the way peft saves a `SEQ_CLS` adapter's `modules_to_save`: under
`base_model.model.classifier.*` in the same weights file, with `task_type` `SEQ_CLS`. The model class that
has that `classifier` (mean pooling, L2 normalisation, linear) ships beside it: `services.classifier_export`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import save as save_safetensors

from protocol.ffa import A_SUFFIX, HEAD_BIAS, HEAD_WEIGHT, AdapterLayout, frozen_basis

PEFT_PREFIX = "base_model.model."
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: Where the head's tensors go in the adapter: the module the exported model names `classifier`.
HEAD_MODULE = "classifier"
HEAD_KEYS = {HEAD_WEIGHT: f"{PEFT_PREFIX}{HEAD_MODULE}.weight", HEAD_BIAS: f"{PEFT_PREFIX}{HEAD_MODULE}.bias"}


class AdapterVectorError(ValueError):
    """The global vector cannot be written as an adapter (non-finite values)."""


@dataclass(frozen=True)
class AdapterFiles:
    """File name -> bytes of an exported adapter directory."""

    files: Mapping[str, bytes]


def adapter_files(
    *,
    layout: AdapterLayout,
    vector: np.ndarray,
    in_features: Mapping[str, int],
    seed: int,
    basis_version: int,
    bases: Mapping[str, np.ndarray] | None = None,
    alpha: float,
    target_modules: Sequence[str],
    layers_to_transform: Sequence[int] | None,
    base_model: str,
    task_type: str | None = None,
    fan_in_fan_out: bool = False,
) -> AdapterFiles:
    """The bytes of a PEFT adapter directory holding the global adapter `vector`.

    `in_features` maps each LoRA module (canonical name, without peft's prefix) to the input width of
    the linear layer it adapts, which fixes the shape of `A_max`. `bases` (module -> `A_max`) replaces the
    seeded basis for an adapter in a re-based basis version. A layout with a head gives a `SEQ_CLS` adapter
    whose `modules_to_save` is the head; without one, `task_type` is peft's (`"CAUSAL_LM"` makes
    `PeftModel.from_pretrained` a `PeftModelForCausalLM`). `fan_in_fan_out` is True for GPT-2's `Conv1D`.
    """
    values = np.asarray(vector, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:  # a corrupt download or a broken decryption: an adapter that answers NaN scores
        raise AdapterVectorError(
            f"vector holds {bad.size} non-finite values (first at index {bad[0]}: {float(values[bad[0]])}): "
            "not an adapter to export"
        )
    tensors = layout.unflatten(values)
    weights: dict[str, np.ndarray] = {}
    for entry in layout.lora:
        if layout.trains_a:  # FedIT / FedRot: the global `A` is in the vector
            a_max = tensors[entry.name + A_SUFFIX]
        elif bases is not None:  # a re-based basis version (seed 001's third stage)
            a_max = np.asarray(bases[entry.name], dtype=np.float32)
        else:
            a_max = frozen_basis(
                seed=seed,
                basis_version=basis_version,
                module=entry.name,
                r_max=layout.r_max,
                in_features=in_features[entry.name],
            )
        weights[f"{PEFT_PREFIX}{entry.name}.lora_A.weight"] = np.ascontiguousarray(a_max)
        weights[f"{PEFT_PREFIX}{entry.name}.lora_B.weight"] = np.ascontiguousarray(tensors[entry.name])
    has_head = bool(layout.head)
    for entry in layout.head:
        weights[HEAD_KEYS[entry.name]] = np.ascontiguousarray(tensors[entry.name])
    config: dict[str, object] = {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS" if has_head else task_type,
        "base_model_name_or_path": base_model,
        "r": layout.r_max,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted(target_modules),
        "layers_to_transform": list(layers_to_transform) if layers_to_transform is not None else None,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": [HEAD_MODULE] if has_head else None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    files = {
        ADAPTER_CONFIG: json.dumps(config, indent=2, sort_keys=True).encode(),
        ADAPTER_WEIGHTS: save_safetensors(weights, metadata={"format": "pt"}),
    }
    return AdapterFiles(files=files)
