"""A small Vision Transformer for 28x28 digits and the LoRA layers seed 004's FedLoRA baseline injects.

LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models", eq. 3) replaces a frozen
linear map ``h = W x`` by ``h = W x + (alpha / r) B A x`` with ``A`` (r x in) Kaiming-initialised and
``B`` (out x r) zero, so an injected model starts out computing exactly what the base model computes.

Why :class:`LoRALinear` exposes ``weight``: ``nn.MultiheadAttention`` never calls ``out_proj(x)``; it
hands ``out_proj.weight`` and ``out_proj.bias`` to ``F.multi_head_attention_forward``, and in eval mode
``nn.TransformerEncoderLayer``'s fused fast path reads ``linear2.weight`` the same way. A wrapper that
only overrides ``forward`` is therefore silently bypassed. Here ``weight`` is a property returning the
merged ``W + (alpha / r) B A``, computed on every access, so every path (module call, fused attention,
fused encoder layer) sees the adapted weight and autograd reaches ``A`` and ``B`` through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 (the conventional name)

LORA_TARGETS = ("self_attn.out_proj", "linear2")  # seed 004: attention output and the FFN's second linear
HEAD_PREFIX = "mlp_head."


class LoRALinear(nn.Module):
    """``base`` frozen, plus the trainable low-rank update ``(alpha / r) B A``."""

    def __init__(self, base: nn.Linear, *, r: int, alpha: float) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"`r` must be at least 1, got {r}")
        if alpha <= 0:
            raise ValueError(f"`alpha` must be positive, got {alpha}")
        self.base = base
        self.base.requires_grad_(False)
        self.r = r
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        # The initialisation nn.Linear and the reference LoRA implementation (loralib) give A.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The merged ``W + (alpha / r) B A`` (what fused kernels read instead of calling forward)."""
        return self.base.weight + self.scaling * (self.lora_B @ self.lora_A)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


@dataclass(frozen=True)
class ViTShape:
    """The architecture; ``image_size`` must be a multiple of ``patch_size``."""

    image_size: int = 28
    patch_size: int = 7
    channels: int = 1
    n_classes: int = 10
    dim: int = 64
    depth: int = 6
    heads: int = 4
    mlp_dim: int = 128
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"`image_size` {self.image_size} must be a multiple of `patch_size`, got {self.patch_size}"
            )
        if self.dim % self.heads:
            raise ValueError(f"`dim` {self.dim} must be a multiple of `heads`, got {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1), got {self.dropout}")

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class ViT(nn.Module):
    """Patch embedding (a strided convolution), class token, learned positions, a pre-norm
    ``nn.TransformerEncoder`` and ``mlp_head`` (LayerNorm, Linear) on the class token, as in
    Dosovitskiy et al. (2021), "An Image is Worth 16x16 Words"."""

    def __init__(self, shape: ViTShape) -> None:
        super().__init__()
        self.shape = shape
        self.patch_embed = nn.Conv2d(
            shape.channels, shape.dim, kernel_size=shape.patch_size, stride=shape.patch_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, shape.dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, shape.n_patches + 1, shape.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=shape.dim,
            nhead=shape.heads,
            dim_feedforward=shape.mlp_dim,
            dropout=shape.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=shape.depth, enable_nested_tensor=False)
        self.mlp_head = nn.Sequential(nn.LayerNorm(shape.dim), nn.Linear(shape.dim, shape.n_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)  # (batch, patches, dim)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        tokens = torch.cat([cls, patches], dim=1) + self.pos_embedding
        return self.mlp_head(self.encoder(tokens)[:, 0])


def inject_lora(model: ViT, *, r: int, alpha: float, train_head: bool = True) -> list[str]:
    """Freeze ``model``, wrap every encoder layer's ``self_attn.out_proj`` and ``linear2`` in
    :class:`LoRALinear` and leave trainable only the LoRA factors (and ``mlp_head`` if ``train_head``).

    Returns the names of the wrapped modules.
    """
    model.requires_grad_(False)
    wrapped = []
    for i, layer in enumerate(model.encoder.layers):
        attention = layer.self_attn
        if isinstance(attention.out_proj, LoRALinear) or isinstance(layer.linear2, LoRALinear):
            raise ValueError(f"encoder layer {i} already carries LoRA")
        attention.out_proj = LoRALinear(attention.out_proj, r=r, alpha=alpha)
        layer.linear2 = LoRALinear(layer.linear2, r=r, alpha=alpha)
        wrapped += [f"encoder.layers.{i}.{target}" for target in LORA_TARGETS]
    if train_head:
        model.mlp_head.requires_grad_(True)
    return wrapped


def is_lora_or_head(key: str) -> bool:
    """The state-dict keys FedLoRA trains, sends and averages (seed 004's ``average_weights_lora``)."""
    return "lora_" in key or key.startswith(HEAD_PREFIX)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
