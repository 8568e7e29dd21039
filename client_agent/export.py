"""Write a global FFA-LoRA adapter as a standard PEFT adapter directory, and load it back for inference.

`peft.PeftModel.from_pretrained(AutoModel.from_pretrained(base), folder)` loads the folder as is. The
mean-pooled head sits beside the adapter in `fedlora_head.safetensors` (the encoder has no slot for it);
`load_exported` applies both and gives the same logits as the training model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import peft
import torch
from safetensors.torch import load_file
from torch import nn

from client_agent.model import HEAD_BIAS, HEAD_WEIGHT, FFAClassifier, pool
from protocol.peft_format import HEAD_CONFIG, HEAD_WEIGHTS, adapter_files


def export_adapter(
    model: FFAClassifier,
    global_vector: np.ndarray,
    folder: str | Path,
    *,
    base_model: str,
) -> Path:
    """Write the global adapter held in `global_vector` (padded to `r_max`) into `folder`.

    `base_model` is written as `base_model_name_or_path`: a portable name, not this machine's path. `A` is
    the basis `model` holds: the seeded one, or the broadcast one it installed after a re-base, so
    `global_vector` must be a version trained in that basis.
    """
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
        head_info={"pooling": "mean", "normalize": True, "num_labels": spec.num_labels},
    )
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.files.items():
        (out / name).write_bytes(data)
    return out


class ExportedClassifier(nn.Module):
    """A PEFT-loaded encoder plus the exported head: what a hospital runs for inference."""

    def __init__(self, encoder: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(pool(hidden, attention_mask))


def load_exported(encoder: nn.Module, folder: str | Path) -> ExportedClassifier:
    """Load an exported adapter onto `encoder` (a freshly loaded base model) with peft, plus the head."""
    path = Path(folder)
    peft_model = peft.PeftModel.from_pretrained(encoder, str(path))
    peft_model.eval()
    info = json.loads((path / HEAD_CONFIG).read_text())
    weights = load_file(str(path / HEAD_WEIGHTS))
    head = nn.Linear(weights[HEAD_WEIGHT].shape[1], int(info["num_labels"]))
    with torch.no_grad():
        head.weight.copy_(weights[HEAD_WEIGHT])
        head.bias.copy_(weights[HEAD_BIAS])
    return ExportedClassifier(peft_model, head)
