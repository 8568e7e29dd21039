"""Instruction/answer pairs for a causal LM: tokenising, local training with DP-SGD, and exact-match scoring.

Training reuses `client_agent.train.run_steps` (the same Poisson sampling, Opacus clipping and noise, and the
same privacy history and accountant as the classifier); only the batch loss differs (`causal_lm_loss`: the
answer tokens' cross-entropy, padding masked). Sequences are right-padded for training, so no real token
attends to padding and an example's gradient is the same in any batch; prompts are left-padded for greedy
generation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

from client_agent.causal_lm import FFACausalLM, answer_loss, causal_lm_loss
from client_agent.train import (
    LocalConfig,
    LocalResult,
    PrivacyHistory,
    TrainingError,
    device_of,
    on_device,
    run_steps,
)


@dataclass(frozen=True)
class Specials:
    """The tokenizer's token ids a sequence needs: `bos` (None: the tokenizer has none), `eos` ending every
    answer, `pad` filling the rest."""

    bos: int | None
    eos: int
    pad: int

    @classmethod
    def of(cls, tokenizer: object) -> Specials:
        eos = getattr(tokenizer, "eos_token_id", None)
        eos = eos if eos is not None else getattr(tokenizer, "sep_token_id", None)
        if eos is None:
            raise TrainingError(
                f"tokenizer {type(tokenizer).__name__} has no eos_token_id (nor sep_token_id)"
            )
        pad = getattr(tokenizer, "pad_token_id", None)
        return cls(
            bos=getattr(tokenizer, "bos_token_id", None),
            eos=int(eos),
            pad=int(pad if pad is not None else eos),
        )


@dataclass(frozen=True)
class QAFeatures:
    """Tokenised pairs, right-padded: `answer_mask` is 1 on the answer's tokens (its eos included)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    answer_mask: torch.Tensor
    prompts: tuple[tuple[int, ...], ...]  # each prompt's ids (after truncation), for generation
    answers: tuple[tuple[int, ...], ...]  # each answer's ids without eos, for exact match
    special: Specials  # the tokenizer's eos and pad, for generation

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def subset(self, indices: Sequence[int] | np.ndarray) -> QAFeatures:
        """The pairs at `indices`, in that order."""
        idx = [int(i) for i in indices]
        rows = torch.as_tensor(idx, dtype=torch.long)
        return QAFeatures(
            self.input_ids[rows],
            self.attention_mask[rows],
            self.answer_mask[rows],
            tuple(self.prompts[i] for i in idx),
            tuple(self.answers[i] for i in idx),
            self.special,
        )


def _ids(tokenizer: object, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]


def encode_pairs(
    tokenizer: object, prompts: Sequence[str], answers: Sequence[str], *, max_length: int
) -> QAFeatures:
    """`bos? prompt answer eos`, padded to `max_length`. A prompt too long loses its *first* tokens (the
    question at its end stays); an answer that leaves no room for a prompt token raises `TrainingError`, and
    so do an answer with no token (nothing to learn, and an empty generation would score as exact) and a
    prompt with no token (greedy generation has nothing to continue)."""
    if len(prompts) != len(answers):
        raise TrainingError(f"got {len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        raise TrainingError("no examples to encode")
    special = Specials.of(tokenizer)
    head = [special.bos] if special.bos is not None else []
    rows, kept_prompts, kept_answers = [], [], []
    for index, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        answer_ids = _ids(tokenizer, " " + answer)
        if not answer_ids:
            raise TrainingError(f"answers[{index}] {answer!r} has no token: every answer needs one")
        text_ids = _ids(tokenizer, prompt)
        if not text_ids:
            raise TrainingError(f"prompts[{index}] {prompt!r} has no token: every prompt needs one")
        room = max_length - len(head) - len(answer_ids) - 1
        if room < 1:
            raise TrainingError(
                f"max_length {max_length} leaves no room for a prompt before answer {answer!r}"
            )
        prompt_ids = head + text_ids[-room:]
        rows.append((prompt_ids, [*answer_ids, special.eos]))
        kept_prompts.append(tuple(prompt_ids))
        kept_answers.append(tuple(answer_ids))
    input_ids = torch.full((len(rows), max_length), special.pad, dtype=torch.long)
    attention = torch.zeros((len(rows), max_length), dtype=torch.long)
    answer_mask = torch.zeros((len(rows), max_length), dtype=torch.long)
    for i, (prompt_ids, answer_ids) in enumerate(rows):
        ids = prompt_ids + answer_ids
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        answer_mask[i, len(prompt_ids) : len(ids)] = 1
    return QAFeatures(input_ids, attention, answer_mask, tuple(kept_prompts), tuple(kept_answers), special)


def check_fits(model: FFACausalLM, features: QAFeatures) -> None:
    """Raise `TrainingError` naming `max_seq_length` when the padded sequences are longer than the base
    model's positions (GPT-2 would fail mid-round indexing its position embedding)."""
    length = int(features.input_ids.shape[1])
    if model.max_positions is not None and length > model.max_positions:
        raise TrainingError(
            f"max_seq_length {length} exceeds the base model's {model.max_positions} positions "
            "(max_position_embeddings)"
        )


@torch.no_grad()
def evaluate_answers(
    model: FFACausalLM, features: QAFeatures, *, batch_size: int = 64
) -> tuple[float, float]:
    """Mean answer loss (per example) and the teacher-forced accuracy of the answer tokens."""
    check_fits(model, features)
    losses = example_answer_losses(model, features, batch_size=batch_size)
    correct = total = 0
    for start in range(0, len(features), batch_size):
        sl = slice(start, start + batch_size)
        ids, mask, attention = on_device(
            device_of(model),
            features.input_ids[sl],
            features.answer_mask[sl][:, 1:].bool(),
            features.attention_mask[sl],
        )
        predicted = model(ids, attention)[:, :-1].argmax(-1)
        correct += int((predicted == ids[:, 1:])[mask].sum())
        total += int(mask.sum())
    return float(losses.mean()), correct / max(total, 1)


@torch.no_grad()
def example_answer_losses(model: FFACausalLM, features: QAFeatures, *, batch_size: int = 64) -> np.ndarray:
    """Each example's answer loss under the model as it is (float64, one per example)."""
    parts = []
    for start in range(0, len(features), batch_size):
        sl = slice(start, start + batch_size)
        ids, attention, answer = on_device(
            device_of(model), features.input_ids[sl], features.attention_mask[sl], features.answer_mask[sl]
        )
        parts.append(answer_loss(model(ids, attention), ids, answer).double().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros(0)


@torch.no_grad()
def greedy_answers(
    model: FFACausalLM, features: QAFeatures, *, batch_size: int = 32
) -> list[tuple[int, ...]]:
    """Each prompt's greedy continuation up to (without) eos, at most as long as the longest answer + 1."""
    special = features.special
    longest = max(len(answer) for answer in features.answers) + 1
    out: list[tuple[int, ...]] = []
    for start in range(0, len(features), batch_size):
        prompts = features.prompts[start : start + batch_size]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), special.pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :] = torch.tensor(prompt)
            mask[i, width - len(prompt) :] = 1
        ids, mask = on_device(device_of(model), ids, mask)
        new = model.generate(
            ids, mask, max_new_tokens=longest, eos_token_id=special.eos, pad_token_id=special.pad
        )
        for row in new.tolist():
            out.append(tuple(row[: row.index(special.eos)] if special.eos in row else row))
    return out


def exact_match(model: FFACausalLM, features: QAFeatures, *, batch_size: int = 32) -> float:
    """The fraction of prompts whose greedy answer (up to eos) is exactly the reference answer's tokens."""
    generated = greedy_answers(model, features, batch_size=batch_size)
    return sum(got == want for got, want in zip(generated, features.answers, strict=True)) / len(features)


def train_causal(
    model: FFACausalLM,
    train: QAFeatures,
    *,
    global_vector: np.ndarray,
    config: LocalConfig,
    evaluation: QAFeatures | None = None,
    history: PrivacyHistory | None = None,
    public_examples: int | None = None,
) -> LocalResult:
    """One round of local training of `B` from the global adapter (`train_local`'s contract: the padded
    delta and the figures; `history` extended in place under DP). Accuracy is the answer tokens'."""
    held_out = evaluation if evaluation is not None else train
    check_fits(model, train)
    check_fits(model, held_out)
    torch.set_num_threads(config.threads)
    model.load_global(global_vector)
    loss_before, acc_before = evaluate_answers(model, held_out, batch_size=config.eval_batch_size)
    started = time.perf_counter()
    params = model.trainable_parameters()
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(params, lr=config.learning_rate)
        if config.optimizer == "sgd"
        else torch.optim.Adam(params, lr=config.learning_rate)
    )
    spent = run_steps(
        model,
        optimizer,
        TensorDataset(train.input_ids, train.attention_mask, train.answer_mask),
        config,
        history=history,
        public_examples=public_examples if public_examples is not None else len(train),
        batch_loss=causal_lm_loss,
    )
    seconds = time.perf_counter() - started
    loss_after, acc_after = evaluate_answers(model, held_out, batch_size=config.eval_batch_size)
    epsilon, sigma, rate = spent if spent is not None else (None, None, None)
    return LocalResult(
        delta=model.delta_from(global_vector),
        num_examples=len(train),
        steps=config.steps,
        loss_before=loss_before,
        loss_after=loss_after,
        accuracy_before=acc_before,
        accuracy_after=acc_after,
        seconds=seconds,
        epsilon=epsilon,
        noise_multiplier=sigma,
        sample_rate=rate,
    )
