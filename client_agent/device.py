"""Where a hospital trains: `FEDLORA_DEVICE` = auto (default) | cpu | cuda | cuda:N.

`auto` takes the first CUDA device when torch sees one and the CPU otherwise. Only the model and its
batches move: the update leaves the model as a numpy vector on the CPU (`FFAClassifier.state_tensors`),
so clipping the delta, noise shares, masking and encryption run on the CPU whatever the device.

Mixed precision is not enabled. DP-SGD's guarantee rests on every example's gradient being clipped to
`max_grad_norm` before the noise is added (Abadi et al., 2016); under autocast the per-example gradients
and their norms would be computed in 16 bits (bf16 keeps 8 bits of mantissa), so a clipped gradient may
exceed the bound the noise is calibrated to, and fp16 adds loss scaling in front of the clipping. The
trained part is small (the adapted layers on cached hidden states), so float32 costs little here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

VARIABLE = "FEDLORA_DEVICE"
_FORMAT = re.compile(r"auto|cpu|cuda(?::(\d+))?")


class DeviceError(ValueError):
    """`FEDLORA_DEVICE` names no device this machine has."""


def resolve_device(setting: str, *, cuda_devices: int | None = None) -> torch.device:
    """The torch device `setting` names. `cuda_devices` is how many CUDA devices there are (None: ask torch);
    asking for one that is not there is an error, never a silent fall back to the CPU."""
    value = setting.strip().lower()
    found = _FORMAT.fullmatch(value)
    if found is None:
        raise DeviceError(f"{VARIABLE} must be auto, cpu, cuda or cuda:N, got {setting!r}")
    count = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    if value == "auto":
        return torch.device("cuda:0" if count > 0 else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    index = int(found.group(1) or 0)
    if index >= count:
        raise DeviceError(
            f"{VARIABLE}={setting!r} but torch sees {count} CUDA device(s)"
            + ("" if count else " (no CUDA build or no GPU); use auto or cpu")
        )
    return torch.device("cuda", index)


def training_device(environ: Mapping[str, str] = os.environ) -> torch.device:
    """The device `FEDLORA_DEVICE` names in `environ` (default auto), for whatever trains outside an agent:
    `fedlora simulate` and its experiments, a hospital's local pre-flight."""
    return resolve_device(environ.get(VARIABLE, "auto"))
