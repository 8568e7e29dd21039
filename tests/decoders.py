"""Tiny randomly initialised decoders (Llama, GPT-2) saved like downloaded models, with MiniLM's tokenizer
(a WordPiece vocabulary any decoder can read: nothing comes from a hub)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from client_agent.model import default_model_path

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
VOCAB = 30522  # MiniLM's WordPiece vocabulary
SEP = 102  # its [SEP]: the decoders' eos
HIDDEN = 32


def tiny_llama(*, seed: int = 0) -> PreTrainedModel:
    """2 layers, hidden 32, 4 query heads sharing 2 key/value heads (so `v_proj` is narrower than `q_proj`)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=101,
        eos_token_id=SEP,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def tiny_gpt2(*, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=HIDDEN,
        n_layer=2,
        n_head=2,
        n_positions=128,
        bos_token_id=101,
        eos_token_id=SEP,
    )
    return GPT2LMHeadModel(config)


def save_decoder(model: PreTrainedModel, folder: Path) -> Path:
    """`model` and MiniLM's tokenizer in `folder`, as `from_pretrained` expects them."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        source = default_model_path() / name
        if source.exists():
            shutil.copy(source, folder / name)
    return folder
