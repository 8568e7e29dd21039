"""A hospital's decoder: any Hugging Face `AutoModelForCausalLM` with FFA-LoRA injected by peft.

The same FFA-LoRA as the classifier (`client_agent.model`), on a model with no head of ours:
- peft adapts the federation's target modules (Llama's `q_proj`/`v_proj`, GPT-2's `c_attn`, which is a
  `Conv1D` that peft adapts with `fan_in_fan_out`); `A` of every module is overwritten with the first `rank`
  rows of `protocol.ffa.frozen_basis` and frozen, only `B` trains, scaled by `alpha / r_max` whatever the rank.
- The update vector is every module's `B`, padded to `r_max`: the layout is read from the model itself and
  equals `services.model_layout.federation_layout` (which the cloud computes from the config alone).
- The loss is the answer tokens' cross-entropy of instruction/answer pairs, each example's averaged over its
  own answer tokens, padding masked (`answer_loss`), so that DP-SGD clips one example's whole sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import peft
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from client_agent.ffa_lora import FFALoRA, ModelError
from client_agent.model import AdapterSpec
from protocol.ffa import AdapterLayout, client_lora_alpha
from services.model_layout import LayoutError, lora_targets

#: Dropout settings of the common decoder configs: DP-SGD trains without dropout, and the exported adapter
#: must give the training model's logits.
DROPOUT_FIELDS = ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout")


def load_causal_lm(model_path: str | Path) -> PreTrainedModel:
    """A pretrained decoder from a local folder, offline, in float32, with dropout off."""
    path = Path(model_path)
    if not (path / "config.json").is_file():
        raise ModelError(f"model_path {str(path)!r} has no config.json: not a Hugging Face model folder")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    for name in DROPOUT_FIELDS:
        if isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, config=config, local_files_only=True, dtype=torch.float32
        )
    except ValueError as e:
        raise ModelError(f"model_path {str(path)!r} is not a causal language model: {e}") from e
    model.eval()
    return model


class FFACausalLM(FFALoRA, nn.Module):
    """A causal LM with FFA-LoRA on the spec's target modules and layers; only `B` trains."""

    def __init__(self, base: PreTrainedModel, spec: AdapterSpec, *, rank: int) -> None:
        super().__init__()
        if not 1 <= rank <= spec.r_max:
            raise ModelError(f"rank must lie in [1, r_max={spec.r_max}], got {rank}")
        if spec.train_a:
            raise ModelError(
                "a causal LM trains B alone (strategy ffa): FedIT / FedRot are not offered for it"
            )
        for param in base.parameters():
            param.requires_grad_(False)
        try:
            # The cloud's rule (`services.model_layout`): the same refusals, the same modules adapted.
            targets = lora_targets(
                base,
                spec.target_modules,
                spec.layers_to_transform,
                num_layers=int(base.config.num_hidden_layers),
            )
        except LayoutError as e:
            raise ModelError(str(e)) from e
        max_positions = getattr(base.config, "max_position_embeddings", None)
        #: The longest sequence the base model can place (None: its config does not say).
        self.max_positions: int | None = int(max_positions) if max_positions is not None else None
        lora_config = peft.LoraConfig(
            r=rank,
            # peft types lora_alpha as int but computes scaling = lora_alpha / r, which a float keeps exact.
            lora_alpha=client_lora_alpha(alpha=spec.alpha, rank=rank, r_max=spec.r_max),  # type: ignore[arg-type]
            target_modules=list(spec.target_modules),
            layers_to_transform=list(spec.layers_to_transform)
            if spec.layers_to_transform is not None
            else None,
            lora_dropout=0.0,
            bias="none",
            # GPT-2's Conv1D stores its weight as (in, out): peft must know, or it transposes the update.
            fan_in_fan_out=any(isinstance(base.get_submodule(name), Conv1D) for name in targets),
            task_type=peft.TaskType.CAUSAL_LM,
        )
        try:
            self.lm = peft.get_peft_model(base, lora_config)
        except ValueError as e:
            raise ModelError(
                f"target_modules {list(spec.target_modules)} with layers_to_transform "
                f"{spec.layers_to_transform} do not match the model: {e}"
            ) from e
        if not self.lora_layers():
            raise ModelError(
                f"layers_to_transform {spec.layers_to_transform} leaves no module of {list(spec.target_modules)}"
            )
        self.spec = spec
        self.rank = rank
        self.fan_in_fan_out = bool(lora_config.fan_in_fan_out)
        # Each module's `A_max` when a broadcast basis replaced the seeded one; None: the seeded basis.
        self.bases: dict[str, np.ndarray] | None = None
        self._install_frozen_basis()

    # -- structure -----------------------------------------------------------------------------------
    def peft_root(self) -> nn.Module:
        return self.lm

    @property
    def layout(self) -> AdapterLayout:
        return AdapterLayout.build(lora_out_features=self.lora_out_features(), r_max=self.spec.r_max)

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Next-token logits at every position (`batch x length x vocab`)."""
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        max_new_tokens: int,
        eos_token_id: int,
        pad_token_id: int,
    ) -> torch.Tensor:
        """Greedy continuations of left-padded prompts (only the new tokens)."""
        out = self.lm.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        )
        return out[:, input_ids.shape[1] :]


def answer_loss(logits: torch.Tensor, input_ids: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Each example's mean cross-entropy over its answer tokens (`answer_mask` 1 on them, 0 on the prompt and
    on padding): the logits at position `t` predict the token at `t + 1`."""
    targets = input_ids[:, 1:]
    weights = answer_mask[:, 1:].to(logits.dtype)
    tokens = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, reduction="none")
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def causal_lm_loss(model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """The batch loss DP-SGD differentiates (`client_agent.train.BatchLoss`): rows of `(input_ids,
    attention_mask, answer_mask)`, each example's answer loss averaged over the batch."""
    input_ids, attention_mask, answer_mask = batch
    return answer_loss(model(input_ids, attention_mask), input_ids, answer_mask).mean()
