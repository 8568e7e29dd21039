"""The files that make an exported classification adapter a `transformers` model: `config.json` and
`modeling_fedlora.py` (the mean-pooled classifier, `services.modeling_fedlora`, shipped verbatim).

With them beside `adapter_config.json` and `adapter_model.safetensors`, stock `transformers` + `peft` run the
global adapter in `pipeline("text-classification", ...)` (README, "Using the exported adapter"); the
transformers loader executes the shipped model file, which is why it asks for `trust_remote_code`.
The cloud (its adapter zip) and the hospital (`client_agent.export`) both call `classifier_files`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from protocol.messages import TrainingConfig
from services import modeling_fedlora

MODEL_CONFIG = "config.json"
MODELING_FILE = "modeling_fedlora.py"
#: The module of the PEFT adapter that holds the head (`modules_to_save`), as the model file names it.
CLASSIFIER_MODULE = "classifier"
#: `config.json`'s key for the federation's `max_seq_length`: the README's snippet gives it to the tokenizer
#: as `model_max_length`, so `truncation=True` cuts where the federation trained and evaluated.
MAX_LENGTH_KEY = "fedlora_max_length"
#: The federation's default `max_seq_length`, for an export that is not told the federation's own.
DEFAULT_MAX_LENGTH: int = TrainingConfig.model_fields["max_seq_length"].default
#: The longest label name, as `protocol.messages.FederationSpec.label_names` allows.
MAX_LABEL_CHARS = 128
# Keys of the base model's config that describe the checkpoint it came from, not the exported model
# (`problem_type` would make the pipeline score with a sigmoid or nothing instead of the trained softmax;
# the dtype keys would run the head in the checkpoint's 16-bit precision instead of the trained float32).
_DROPPED_KEYS = (
    "architectures",
    "auto_map",
    "dtype",
    "id2label",
    "label2id",
    "num_labels",
    "problem_type",
    "torch_dtype",
    "transformers_version",
)


class ClassifierExportError(ValueError):
    """The base model or the labels cannot be exported as a `transformers` classifier."""


def classifier_files(
    *,
    base_config: Mapping[str, object],
    num_labels: int,
    label_names: Sequence[str] | None,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> dict[str, bytes]:
    """`config.json` (the base model's config, the labels, `auto_map` naming the shipped class, float32,
    softmax scores, and `max_length`, the federation's `max_seq_length`) and the model file, by file name.
    `base_config` is the base model's `config.json` as a mapping."""
    model_type = base_config.get("model_type")
    model_class = modeling_fedlora.CLASSIFIERS.get(str(model_type))
    if model_class is None:
        raise ClassifierExportError(
            f"model_type must be one of {sorted(modeling_fedlora.CLASSIFIERS)} to export a classifier, "
            f"got {model_type!r}"
        )
    if num_labels < 2:
        raise ClassifierExportError(f"num_labels must be at least 2, got {num_labels}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ClassifierExportError(f"max_length must be a positive number of tokens, got {max_length!r}")
    names = list(label_names) if label_names is not None else [f"LABEL_{i}" for i in range(num_labels)]
    for name in names:
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_LABEL_CHARS:
            raise ClassifierExportError(
                f"label_names must be strings of 1 to {MAX_LABEL_CHARS} characters, got {name!r} in {names}"
            )
    if len(names) != num_labels or len(set(names)) != num_labels:
        raise ClassifierExportError(f"label_names must name {num_labels} distinct classes, got {names}")
    config = {
        key: value
        for key, value in base_config.items()
        if key not in _DROPPED_KEYS and not key.startswith("_")
    }
    config.update(
        architectures=[model_class.__name__],
        auto_map={"AutoModelForSequenceClassification": f"{Path(MODELING_FILE).stem}.{model_class.__name__}"},
        id2label={str(i): name for i, name in enumerate(names)},
        label2id={name: i for i, name in enumerate(names)},
        problem_type="single_label_classification",
        dtype="float32",
        **{MAX_LENGTH_KEY: max_length},
    )
    return {
        MODEL_CONFIG: json.dumps(config, indent=2, sort_keys=True).encode(),
        MODELING_FILE: Path(modeling_fedlora.__file__).read_bytes(),
    }


def read_base_config(model_path: str | Path) -> dict[str, object]:
    """The base model's `config.json` from its folder."""
    path = Path(model_path) / MODEL_CONFIG
    try:
        loaded = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ClassifierExportError(f"model_path {str(model_path)!r}: cannot read {MODEL_CONFIG}: {e}") from e
    if not isinstance(loaded, dict):
        raise ClassifierExportError(f"model_path {str(model_path)!r}: {MODEL_CONFIG} is not a JSON object")
    return loaded
