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

from services import modeling_fedlora

MODEL_CONFIG = "config.json"
MODELING_FILE = "modeling_fedlora.py"
#: The module of the PEFT adapter that holds the head (`modules_to_save`), as the model file names it.
CLASSIFIER_MODULE = "classifier"
# Keys of the base model's config that describe the checkpoint it came from, not the exported model.
_DROPPED_KEYS = ("architectures", "auto_map", "id2label", "label2id", "num_labels", "transformers_version")


class ClassifierExportError(ValueError):
    """The base model or the labels cannot be exported as a `transformers` classifier."""


def classifier_files(
    *, base_config: Mapping[str, object], num_labels: int, label_names: Sequence[str] | None
) -> dict[str, bytes]:
    """`config.json` (the base model's config, the labels, and `auto_map` naming the shipped class) and the
    model file, by file name. `base_config` is the base model's `config.json` as a mapping."""
    model_type = base_config.get("model_type")
    model_class = modeling_fedlora.CLASSIFIERS.get(str(model_type))
    if model_class is None:
        raise ClassifierExportError(
            f"model_type must be one of {sorted(modeling_fedlora.CLASSIFIERS)} to export a classifier, "
            f"got {model_type!r}"
        )
    if num_labels < 2:
        raise ClassifierExportError(f"num_labels must be at least 2, got {num_labels}")
    names = list(label_names) if label_names is not None else [f"LABEL_{i}" for i in range(num_labels)]
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
