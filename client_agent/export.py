"""Write a global FFA-LoRA adapter as a PEFT adapter that stock `transformers` + `peft` run, and load it back.

The folder holds the PEFT adapter (`adapter_config.json`, `adapter_model.safetensors`, the head under
`modules_to_save`) and the model it adapts: `config.json` and `modeling_fedlora.py`, the mean-pooled,
L2-normalised classifier (`services.classifier_export`). README, "Using the exported adapter", shows the
loading code a hospital runs without this project. `load_exported` is the project's own reader: it puts the
LoRA modules on a bare encoder with peft and the head beside it, for the project's inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import peft
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedModel

from client_agent.model import HEAD_BIAS, HEAD_WEIGHT, FFAClassifier, pool
from protocol.peft_format import ADAPTER_WEIGHTS, HEAD_KEYS, adapter_files
from services.classifier_export import DEFAULT_MAX_LENGTH, classifier_files


def export_adapter(
    model: FFAClassifier,
    global_vector: np.ndarray,
    folder: str | Path,
    *,
    base_model: str,
    label_names: Sequence[str] | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> Path:
    """Write the global adapter held in `global_vector` (padded to `r_max`) into `folder`.

    `base_model` is written as `base_model_name_or_path`: a portable name, not this machine's path. `A` is
    the basis `model` holds: the seeded one, or the broadcast one it installed after a re-base, so
    `global_vector` must be a version trained in that basis. `label_names` (the federation's) become the
    labels `pipeline` answers with; None: `LABEL_0`, `LABEL_1`, ... `max_length` is the federation's
    `max_seq_length`, where the README's snippet truncates. Nothing is written when the vector or the
    labels are refused (`AdapterVectorError`, `ClassifierExportError`).
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
    )
    base_config = cast(PreTrainedModel, model.encoder.get_base_model()).config.to_dict()
    model_files = classifier_files(
        base_config=base_config, num_labels=spec.num_labels, label_names=label_names, max_length=max_length
    )
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in {**files.files, **model_files}.items():
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
    """Load an exported adapter onto `encoder` (a freshly loaded bare base model, no head): the LoRA modules
    with peft, the head from the adapter's weights."""
    path = Path(folder)
    config = peft.LoraConfig.from_pretrained(str(path))
    # The bare encoder has no `classifier` to wrap: peft loads the LoRA modules, the head is set below.
    config.task_type = None
    config.modules_to_save = None
    peft_model = peft.PeftModel.from_pretrained(encoder, str(path), config=config)
    peft_model.eval()
    weights = load_file(str(path / ADAPTER_WEIGHTS))
    head_weight, head_bias = weights[HEAD_KEYS[HEAD_WEIGHT]], weights[HEAD_KEYS[HEAD_BIAS]]
    head = nn.Linear(head_weight.shape[1], head_weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(head_weight)
        head.bias.copy_(head_bias)
    return ExportedClassifier(peft_model, head)
