"""Federation specs as the composition root makes them: from a run's flat settings (the demo's, a
simulation's) and from a YAML or JSON file (`fedlora spec validate`, the bootstrap job).

Either way the spec goes through `FederationSpec`'s own validator, so a run is refused exactly where the
cloud would refuse the federation, and a `SpecError` names each field at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

import yaml
from pydantic import TypeAdapter, ValidationError

from protocol.crypto.params import CKKSParams, HEParams, PaillierParams, PlainParams
from protocol.messages import FederationSpec, Strategy, TaskType

SchemeName = Literal["ckks", "paillier", "none"]


class SpecError(ValueError):
    """A federation spec that does not validate, or a file that holds none; `reasons` name each fault."""

    def __init__(self, reasons: Sequence[str], *, source: Path | None = None) -> None:
        self.reasons = tuple(reasons)
        self.source = source
        joined = "; ".join(self.reasons)
        super().__init__(f"{source}: {joined}" if source is not None else joined)


class FlatSpec(TypedDict, total=False):
    """A spec's settings under the flat names the CLI, the demo and the simulation use; what is left out
    keeps `FederationSpec`'s default. `epsilon` None turns DP-SGD off, as `dp_sgd` False does while keeping
    the epsilon given; `clip_norm` None keeps the default clip norm."""

    federation_id: str
    task_type: TaskType | str
    num_labels: int
    target_modules: tuple[str, ...]
    layers_to_transform: tuple[int, ...] | None
    rank: int
    alpha: float
    seed: int
    strategy: Strategy | str
    scheme: SchemeName
    masking: bool  # packed Paillier only: mask uploads below the encryption (protocol.secagg)
    he_clip: float  # packed Paillier: the fixed-point range of each coordinate, noise shares included
    # packed Paillier: bits per coordinate within that range; "auto": the fewest the DP noise allows, which
    # the cloud plans for the adapter's size (`FederationSpec.compression`), the hospitals rounding at random
    quant_bits: int | Literal["auto"]
    epsilon: float | None
    dp_sgd: bool
    delta: float
    max_grad_norm: float
    central_noise: float
    clip_norm: float | None
    central_delta: float
    distributed: bool
    learning_rate: float
    head_learning_rate: float | None
    steps: int
    batch_size: int
    max_seq_length: int
    rounds: int
    min_clients_per_edge: int
    round_deadline_s: float
    upload_deadline_s: float


# Flat name -> (the spec's section, the field in it); None: a field of the spec itself.
_FIELDS: dict[str, tuple[str | None, str]] = {
    "rank": (None, "r_max"),
    "alpha": (None, "lora_alpha"),
    "dp_sgd": ("local_dp", "enabled"),
    "delta": ("local_dp", "delta"),
    "max_grad_norm": ("local_dp", "max_grad_norm"),
    "central_noise": ("central_dp", "noise_multiplier"),
    "clip_norm": ("central_dp", "clip_norm"),
    "central_delta": ("central_dp", "delta"),
    "distributed": ("central_dp", "distributed"),
    "learning_rate": ("training", "learning_rate"),
    "head_learning_rate": ("training", "head_learning_rate"),
    "steps": ("training", "local_steps"),
    "batch_size": ("training", "batch_size"),
    "max_seq_length": ("training", "max_seq_length"),
    "he_clip": ("he", "clip"),
    "quant_bits": ("he", "quant_bits"),
}


def he_params(scheme: SchemeName) -> CKKSParams | PaillierParams | PlainParams:
    """A scheme's default parameters, by its `HEKind` name (the one the CLI and the experiments use)."""
    params: CKKSParams | PaillierParams | PlainParams = TypeAdapter(HEParams).validate_python(
        {"kind": scheme}
    )
    return params


def federation_spec(**flat: Unpack[FlatSpec]) -> FederationSpec:
    """The `FederationSpec` these flat settings describe; `SpecError` if the spec's validator refuses it."""
    values: dict[str, Any] = {"he": {"kind": flat["scheme"]}} if "scheme" in flat else {}
    if flat.get("masking"):
        if flat.get("scheme") != "paillier":
            raise SpecError(["masking needs scheme 'paillier' (an exact ring for the masks to cancel in)"])
        values["he"]["masking"] = True
    paillier = flat.get("scheme") == "paillier"
    for name, value in flat.items():
        if name in ("scheme", "masking") or (name in ("he_clip", "quant_bits") and not paillier):
            continue  # packed Paillier's encoding; other schemes have none
        if name == "quant_bits" and value == "auto":
            values["compression"] = {"bits": "auto"}
            values["he"]["rounding"] = "stochastic"
            continue
        if name == "epsilon":
            local_dp = values.setdefault("local_dp", {})
            local_dp.setdefault("enabled", value is not None)
            if value is not None:
                local_dp["epsilon"] = value
        elif name == "clip_norm" and value is None:
            continue
        else:
            section, field = _FIELDS.get(name, (None, name))
            (values if section is None else values.setdefault(section, {}))[field] = value
    try:
        return FederationSpec.model_validate(values)
    except ValidationError as e:
        raise SpecError(reasons(e)) from e


def load_spec(path: Path) -> FederationSpec:
    """The spec in a YAML (or JSON) file; `SpecError` if it cannot be read or does not validate."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SpecError([f"cannot read the spec file: {e.strerror}"], source=path) from e
    except yaml.YAMLError as e:
        raise SpecError([f"not YAML or JSON: {e}"], source=path) from e
    try:
        return FederationSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(reasons(e), source=path) from e


def reasons(error: ValidationError) -> list[str]:
    """One `field.path: message` a fault (the message alone for the spec as a whole)."""
    out = []
    for detail in error.errors():
        where = ".".join(str(part) for part in detail["loc"])
        message = detail["msg"].removeprefix("Value error, ")
        out.append(f"{where}: {message}" if where else message)
    return out
