"""Write a causal LM's global FFA-LoRA adapter as a standard PEFT adapter folder.

Stock libraries load it with no code of ours, and `generate()` uses it:

    base = AutoModelForCausalLM.from_pretrained(base_folder)
    model = PeftModel.from_pretrained(base, adapter_folder)   # a PeftModelForCausalLM

A causal LM has no head of ours, so the folder holds only `adapter_config.json` and
`adapter_model.safetensors` (rank `r_max`, `A` = the frozen basis, `B` = the global padded `B`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from client_agent.causal_lm import FFACausalLM
from protocol.peft_format import adapter_files

PEFT_TASK_TYPE = "CAUSAL_LM"


def export_causal_adapter(
    model: FFACausalLM, global_vector: np.ndarray, folder: str | Path, *, base_model: str
) -> Path:
    """Write the global adapter held in `global_vector` (padded to `r_max`) into `folder`; `base_model` is
    written as `base_model_name_or_path` (a portable name, not this machine's path)."""
    spec = model.spec
    files = adapter_files(
        layout=model.layout,
        vector=global_vector,
        in_features=model.in_features(),
        seed=spec.seed,
        basis_version=spec.basis_version,
        bases=model.bases,
        alpha=spec.alpha,
        target_modules=spec.target_modules,
        layers_to_transform=spec.layers_to_transform,
        base_model=base_model,
        task_type=PEFT_TASK_TYPE,
        fan_in_fan_out=model.fan_in_fan_out,
    )
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.files.items():
        (out / name).write_bytes(data)
    return out
