"""What every hospital model with FFA-LoRA shares, whatever its task (`client_agent.model`'s classifier,
`client_agent.causal_lm`'s decoder): the LoRA layers peft injected, `A` from the seeded (or a broadcast)
basis, and `B` (plus `A` where the strategy trains it) read from and written to the flat global vector.

A model mixes `FFALoRA` into its `nn.Module` and says where peft's layers live (`peft_root`), its spec and its
rank; a model with more trained tensors (the classifier's head) extends `state_tensors` and `load_global`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import peft
import torch
from torch import nn

from protocol.ffa import A_SUFFIX, AdapterLayout, frozen_basis, natural_key
from protocol.peft_format import PEFT_PREFIX


class ModelError(ValueError):
    """The base model or the adapter configuration cannot be used."""


class FFALoRA:
    """The FFA-LoRA half of a hospital model. Needs `spec` (an `AdapterSpec`), `rank`, `bases` and
    `peft_root()`; `parameters()` comes from `nn.Module`."""

    spec: Any
    rank: int
    bases: dict[str, np.ndarray] | None

    def peft_root(self) -> nn.Module:
        """The module peft injected its LoRA layers into."""
        raise NotImplementedError

    @property
    def layout(self) -> AdapterLayout:
        raise NotImplementedError

    # -- structure -----------------------------------------------------------------------------------
    def lora_layers(self) -> dict[str, Any]:
        """Canonical module name (without peft's prefix) -> peft LoraLayer, in natural order."""
        found = {
            name.removeprefix(PEFT_PREFIX): module
            for name, module in self.peft_root().named_modules()
            if isinstance(module, peft.tuners.lora.LoraLayer)
        }
        return {name: found[name] for name in sorted(found, key=natural_key)}

    def in_features(self) -> dict[str, int]:
        return {name: layer.in_features for name, layer in self.lora_layers().items()}

    def lora_out_features(self) -> dict[str, int]:
        return {name: layer.out_features for name, layer in self.lora_layers().items()}

    def _install_frozen_basis(self) -> None:
        """`A` of every module from the seeded basis (frozen unless the strategy trains it), `B` zero."""
        with torch.no_grad():
            for name, layer in self.lora_layers().items():
                a_max = frozen_basis(
                    seed=self.spec.seed,
                    basis_version=self.spec.basis_version,
                    module=name,
                    r_max=self.spec.r_max,
                    in_features=layer.in_features,
                )
                lora_a = layer.lora_A["default"].weight
                lora_a.copy_(torch.from_numpy(a_max[: self.rank]))
                lora_a.requires_grad_(self.spec.train_a)
                layer.lora_B["default"].weight.zero_()
                layer.lora_B["default"].weight.requires_grad_(True)

    def install_basis(self, bases: Mapping[str, np.ndarray]) -> None:
        """Use a broadcast basis (a re-based basis version) instead of the seeded one: each module's frozen
        `A` becomes the first `rank` rows of `bases[module]` (`r_max x in_features`)."""
        if self.spec.train_a:
            raise ModelError("a broadcast basis replaces a frozen A; this model trains A")
        layers = self.lora_layers()
        for name, layer in layers.items():
            a_max = bases.get(name)
            if a_max is None or a_max.shape != (self.spec.r_max, layer.in_features):
                shape = None if a_max is None else a_max.shape
                raise ModelError(
                    f"basis for {name} has shape {shape}, expected ({self.spec.r_max}, {layer.in_features})"
                )
        with torch.no_grad():
            for name, layer in layers.items():
                rows = np.asarray(bases[name][: self.rank], np.float32)
                layer.lora_A["default"].weight.copy_(torch.from_numpy(rows))
        self.bases = {name: np.asarray(bases[name], np.float32).copy() for name in layers}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]  # type: ignore[attr-defined]

    # -- the global adapter as a flat vector ---------------------------------------------------------
    def state_tensors(self) -> dict[str, np.ndarray]:
        """Current `B` (rank columns) of every module and `A` (rank rows) when it trains."""
        layers = self.lora_layers()
        out = {
            name: layer.lora_B["default"].weight.detach().cpu().numpy().copy()
            for name, layer in layers.items()
        }
        if self.spec.train_a:
            for name, layer in layers.items():
                out[name + A_SUFFIX] = layer.lora_A["default"].weight.detach().cpu().numpy().copy()
        return out

    def load_global(self, vector: np.ndarray) -> None:
        """Set `B` (the first `rank` columns of the global padded `B`) and `A` when it trains (its first
        `rank` rows) from a global vector."""
        self._load_tensors(self.layout.unflatten(vector, rank=self.rank))

    def _load_tensors(self, tensors: Mapping[str, np.ndarray]) -> None:
        with torch.no_grad():
            for name, layer in self.lora_layers().items():
                layer.lora_B["default"].weight.copy_(torch.from_numpy(tensors[name]))
                if self.spec.train_a:
                    layer.lora_A["default"].weight.copy_(torch.from_numpy(tensors[name + A_SUFFIX]))

    def delta_from(self, global_vector: np.ndarray) -> np.ndarray:
        """The padded update `current - global` over the columns this client trains; zero elsewhere."""
        layout = self.layout
        start = layout.unflatten(global_vector, rank=self.rank)
        now = self.state_tensors()
        return layout.flatten({name: now[name] - start[name] for name in now})
