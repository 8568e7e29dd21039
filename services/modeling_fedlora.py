"""The federation's text classifier as a `transformers` model: a BERT-family encoder, mean pooling over the
real tokens, L2 normalisation, one linear layer.

This file is shipped verbatim inside every exported classification adapter (`auto_map` in its
`config.json` names the class for the base model's type), so that stock `transformers` + `peft` run the
adapter in `pipeline("text-classification", ...)` without the project's code. It must import nothing but
`torch` and `transformers`. No stock class pools this way: `BertForSequenceClassification` reads BERT's CLS
pooler, and the classes with a mean-pooling option (ModernBERT, EuroBERT) are other encoders with a dense
and LayerNorm head, not an L2 normalisation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from transformers import BertModel, CamembertModel, PretrainedConfig, RobertaModel, XLMRobertaModel
from transformers.modeling_outputs import SequenceClassifierOutput


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, L2-normalised: the sentence embedding all-MiniLM-L6-v2 was trained for."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1.0)
    return F.normalize(summed / counts, p=2.0, dim=-1)


class MeanPoolClassifierMixin:
    """The encoder without its CLS pooler, plus `classifier` on the mean-pooled, L2-normalised embedding.

    Each class below subclasses its encoder's bare model, so that its module names are the bare encoder's:
    the base model's weights load as they are, and the exported LoRA modules keep the names they were
    trained under.
    """

    classifier: nn.Linear

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config, add_pooling_layer=False)  # type: ignore[call-arg]
        if config.num_labels is None:
            raise ValueError("the config names no labels: id2label is missing")
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()  # type: ignore[attr-defined]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        kwargs.pop("return_dict", None)  # the encoder's output is read by name below
        hidden = (
            super()  # type: ignore[misc]
            .forward(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs
            )
            .last_hidden_state
        )
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        logits = self.classifier(mean_pool(hidden, attention_mask))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class FedLoraBertClassifier(MeanPoolClassifierMixin, BertModel):
    pass


class FedLoraRobertaClassifier(MeanPoolClassifierMixin, RobertaModel):
    pass


class FedLoraXLMRobertaClassifier(MeanPoolClassifierMixin, XLMRobertaModel):
    pass


class FedLoraCamembertClassifier(MeanPoolClassifierMixin, CamembertModel):
    pass


#: The class for each base model type (`config.json`'s `model_type`).
CLASSIFIERS: dict[str, type[MeanPoolClassifierMixin]] = {
    "bert": FedLoraBertClassifier,
    "roberta": FedLoraRobertaClassifier,
    "xlm-roberta": FedLoraXLMRobertaClassifier,
    "camembert": FedLoraCamembertClassifier,
}
