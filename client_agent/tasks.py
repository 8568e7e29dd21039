"""What a hospital's model learns, behind one interface: sequence classification or causal language modelling.

The agent, the simulation and the experiments ask `task_for(spec)` for the federation's task type and use
only this interface: build the model at a rank, encode a data set once, train a round from the global
adapter (the same DP-SGD and privacy history for both), score it, and export the global adapter as a
standard PEFT folder. The update vector both produce is the FFA-LoRA layout of `protocol.ffa`.

A data set is the same for both (`client_agent.data.Dataset`): for classification its labels are classes;
for a causal LM its texts are the prompts and `label_names[label]` is each prompt's answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from transformers import AutoTokenizer

from client_agent.causal_export import export_causal_adapter
from client_agent.causal_lm import FFACausalLM, load_causal_lm
from client_agent.causal_train import (
    QAFeatures,
    encode_pairs,
    evaluate_answers,
    exact_match,
    example_answer_losses,
    train_causal,
)
from client_agent.data.dataset import Dataset
from client_agent.export import export_adapter
from client_agent.model import AdapterSpec, FFAClassifier, load_encoder
from client_agent.train import (
    Features,
    LocalConfig,
    LocalResult,
    PrivacyHistory,
    encode,
    evaluate,
    example_losses,
    train_local,
)
from protocol.ffa import AdapterLayout
from protocol.messages import FederationSpec, TaskType
from services.classifier_export import DEFAULT_MAX_LENGTH


class AdapterModel(Protocol):
    """What every task's model offers the federation: FFA-LoRA's flat update vector and its basis."""

    rank: int
    bases: dict[str, np.ndarray] | None

    @property
    def layout(self) -> AdapterLayout: ...

    def in_features(self) -> dict[str, int]: ...

    def load_global(self, vector: np.ndarray) -> None: ...

    def delta_from(self, global_vector: np.ndarray) -> np.ndarray: ...

    def install_basis(self, bases: Mapping[str, np.ndarray]) -> None: ...


class TaskKind(ABC):
    """One task type: how its model is built, fed, trained, scored and exported."""

    task_type: ClassVar[TaskType]

    @staticmethod
    def tokenizer(model_path: str | Path) -> Any:
        return AutoTokenizer.from_pretrained(model_path, local_files_only=True)

    @abstractmethod
    def build_model(self, model_path: str | Path, spec: FederationSpec, *, rank: int) -> Any:
        """The base model in `model_path` with FFA-LoRA at `rank`, `A` the federation's seeded basis."""

    @abstractmethod
    def encode(self, model: Any, tokenizer: Any, data: Dataset, *, max_length: int) -> Any:
        """`data` as the model's training inputs, computed once per model."""

    @abstractmethod
    def train(
        self,
        model: Any,
        features: Any,
        *,
        global_vector: np.ndarray,
        config: LocalConfig,
        evaluation: Any | None = None,
        history: PrivacyHistory | None = None,
        public_examples: int | None = None,
    ) -> LocalResult:
        """One round of local training from the global adapter (`client_agent.train.train_local`'s contract)."""

    @abstractmethod
    def example_losses(self, model: Any, features: Any) -> np.ndarray:
        """Each example's loss under the model as it is (the held-out loss a hospital releases with DP)."""

    @abstractmethod
    def evaluate(self, model: Any, features: Any) -> tuple[float, float]:
        """Mean loss and the task's accuracy (a class's; the exact match of greedy answers) on a held-out set."""

    @abstractmethod
    def rows(self, features: Any, indices: np.ndarray) -> Any:
        """The encoded examples at `indices` (one hospital's share of an encoded set)."""

    @abstractmethod
    def score(self, model: Any, tokenizer: Any, features: Any) -> float:
        """The task's quality figure in [0, 1]: accuracy, or exact match of the generated answers."""

    @abstractmethod
    def export(
        self,
        model: Any,
        global_vector: np.ndarray,
        folder: str | Path,
        *,
        base_model: str,
        label_names: Sequence[str] | None = None,
        max_length: int | None = None,
    ) -> Path:
        """The global adapter as a standard PEFT adapter folder (`label_names`: a classifier's labels;
        `max_length`: the federation's `max_seq_length`, where a classifier's pipeline truncates)."""


class SequenceClassification(TaskKind):
    """An encoder with FFA-LoRA and a mean-pooled linear head (`client_agent.model.FFAClassifier`)."""

    task_type = TaskType.SEQUENCE_CLASSIFICATION

    def build_model(self, model_path: str | Path, spec: FederationSpec, *, rank: int) -> FFAClassifier:
        return FFAClassifier(load_encoder(model_path), AdapterSpec.from_federation(spec), rank=rank)

    def encode(self, model: FFAClassifier, tokenizer: Any, data: Dataset, *, max_length: int) -> Features:
        return encode(model, tokenizer, data.texts, data.labels, max_length=max_length)

    def train(
        self,
        model: FFAClassifier,
        features: Features,
        *,
        global_vector: np.ndarray,
        config: LocalConfig,
        evaluation: Features | None = None,
        history: PrivacyHistory | None = None,
        public_examples: int | None = None,
    ) -> LocalResult:
        return train_local(
            model,
            features,
            global_vector=global_vector,
            config=config,
            evaluation=evaluation,
            history=history,
            public_examples=public_examples,
        )

    def example_losses(self, model: FFAClassifier, features: Features) -> np.ndarray:
        return example_losses(model, features)

    def evaluate(self, model: FFAClassifier, features: Features) -> tuple[float, float]:
        return evaluate(model, features)

    def rows(self, features: Features, indices: np.ndarray) -> Features:
        return features.subset(indices)

    def score(self, model: FFAClassifier, tokenizer: Any, features: Features) -> float:
        return evaluate(model, features)[1]

    def export(
        self,
        model: FFAClassifier,
        global_vector: np.ndarray,
        folder: str | Path,
        *,
        base_model: str,
        label_names: Sequence[str] | None = None,
        max_length: int | None = None,
    ) -> Path:
        return export_adapter(
            model,
            global_vector,
            folder,
            base_model=base_model,
            label_names=label_names,
            max_length=DEFAULT_MAX_LENGTH if max_length is None else max_length,
        )


class CausalLM(TaskKind):
    """A decoder with FFA-LoRA on instruction/answer pairs (`client_agent.causal_lm.FFACausalLM`)."""

    task_type = TaskType.CAUSAL_LM

    def build_model(self, model_path: str | Path, spec: FederationSpec, *, rank: int) -> FFACausalLM:
        return FFACausalLM(load_causal_lm(model_path), AdapterSpec.from_federation(spec), rank=rank)

    def encode(self, model: FFACausalLM, tokenizer: Any, data: Dataset, *, max_length: int) -> QAFeatures:
        answers = [data.label_names[label] for label in data.labels]
        return encode_pairs(tokenizer, data.texts, answers, max_length=max_length)

    def train(
        self,
        model: FFACausalLM,
        features: QAFeatures,
        *,
        global_vector: np.ndarray,
        config: LocalConfig,
        evaluation: QAFeatures | None = None,
        history: PrivacyHistory | None = None,
        public_examples: int | None = None,
    ) -> LocalResult:
        return train_causal(
            model,
            features,
            global_vector=global_vector,
            config=config,
            evaluation=evaluation,
            history=history,
            public_examples=public_examples,
        )

    def example_losses(self, model: FFACausalLM, features: QAFeatures) -> np.ndarray:
        return example_answer_losses(model, features)

    def evaluate(self, model: FFACausalLM, features: QAFeatures) -> tuple[float, float]:
        """Mean answer loss and the exact match of the greedy answers (the task's own measure)."""
        loss, _ = evaluate_answers(model, features)
        return loss, exact_match(model, features)

    def rows(self, features: QAFeatures, indices: np.ndarray) -> QAFeatures:
        return features.subset(indices)

    def score(self, model: FFACausalLM, tokenizer: Any, features: QAFeatures) -> float:
        return exact_match(model, features)

    def export(
        self,
        model: FFACausalLM,
        global_vector: np.ndarray,
        folder: str | Path,
        *,
        base_model: str,
        label_names: Sequence[str] | None = None,
        max_length: int | None = None,
    ) -> Path:
        return export_causal_adapter(model, global_vector, folder, base_model=base_model)


TASK_KINDS: dict[TaskType, TaskKind] = {
    kind.task_type: kind for kind in (SequenceClassification(), CausalLM())
}


def task_for(spec: FederationSpec | TaskType) -> TaskKind:
    """The task type a federation names (or the type itself)."""
    return TASK_KINDS[spec.task_type if isinstance(spec, FederationSpec) else spec]
