"""Issue 24, item 4: an exported classification adapter runs in `transformers.pipeline` with stock `peft`.

The loading code is the README's snippet (`tests.stock_pipeline`); its scores are compared with the softmax
of the project's own inference model for the same global vector (`tests.models.global_model_at_rmax`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, RobertaConfig, RobertaModel

from client_agent.export import export_adapter, load_exported
from client_agent.model import AdapterSpec, FFAClassifier, default_model_path, load_encoder
from protocol.peft_format import AdapterVectorError
from services.classifier_export import ClassifierExportError, classifier_files
from tests.models import global_model_at_rmax
from tests.stock_pipeline import (
    STOCK_TEXTS,
    assert_same_scores,
    project_probabilities,
    readme_snippet,
    run_stock_loader,
)

SPEC = AdapterSpec(
    num_labels=3, target_modules=("query", "value"), layers_to_transform=(1, 2), r_max=4, alpha=4.0, seed=7
)
LABELS = ("negative", "neutral", "positive")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


def save_tiny_base(folder: Path, tokenizer, kind: str) -> Path:
    """A tiny random encoder saved as a model folder, as a hospital's base model would be."""
    sizes = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64}
    torch.manual_seed(11)
    if kind == "bert":
        BertModel(
            BertConfig(vocab_size=tokenizer.vocab_size, **sizes), add_pooling_layer=False
        ).save_pretrained(folder)
    else:  # RoBERTa: position ids counted from its padding id, one token type
        config = RobertaConfig(vocab_size=tokenizer.vocab_size, type_vocab_size=1, pad_token_id=0, **sizes)
        RobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, tokenizer) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("tiny-bert"), tokenizer, "bert")


def global_vector_for(model: FFAClassifier, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=0.5, size=model.layout.size).astype(np.float32)


def test_a_tiny_bert_export_runs_in_a_stock_pipeline_with_the_projects_scores(tokenizer, tiny_base, tmp_path):
    """The stock pipeline and the project's own reader (`load_exported`) both give the project's scores."""
    model = FFAClassifier(load_encoder(tiny_base), SPEC, rank=2)
    vector = global_vector_for(model, seed=5)
    folder = export_adapter(model, vector, tmp_path / "adapter", base_model="tiny-bert", label_names=LABELS)
    ours = project_probabilities(
        global_model_at_rmax(load_encoder(tiny_base), SPEC, vector), tokenizer, LABELS
    )

    stock = run_stock_loader(folder, tiny_base, tmp_path)

    assert_same_scores(stock, ours, LABELS)
    # The project's own reader agrees with it on the same folder.
    loaded = load_exported(load_encoder(tiny_base), folder)
    batch = tokenizer(STOCK_TEXTS[0], return_tensors="pt")
    probabilities = torch.softmax(loaded(batch["input_ids"], batch["attention_mask"])[0], dim=-1)
    assert [float(p) for p in probabilities] == pytest.approx([ours[0][label] for label in LABELS], abs=1e-6)


def test_a_tiny_roberta_export_runs_in_a_stock_pipeline_with_the_projects_scores(tokenizer, tmp_path):
    base = save_tiny_base(tmp_path / "tiny-roberta", tokenizer, "roberta")
    model = FFAClassifier(load_encoder(base), SPEC, rank=4)
    vector = global_vector_for(model, seed=8)
    folder = export_adapter(
        model, vector, tmp_path / "adapter", base_model="tiny-roberta", label_names=LABELS
    )
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["FedLoraRobertaClassifier"]
    ours = project_probabilities(global_model_at_rmax(load_encoder(base), SPEC, vector), tokenizer, LABELS)

    assert_same_scores(run_stock_loader(folder, base, tmp_path), ours, LABELS)


@pytest.mark.slow
def test_the_demo_models_export_runs_in_a_stock_pipeline(tokenizer, tmp_path):
    """The demo's base model (MiniLM) through the same path."""
    base = default_model_path()
    spec = AdapterSpec(
        num_labels=3, target_modules=("value",), layers_to_transform=(4, 5), r_max=2, alpha=2.0
    )
    model = FFAClassifier(load_encoder(base), spec, rank=2)
    vector = global_vector_for(model, seed=6)
    folder = export_adapter(
        model, vector, tmp_path / "adapter", base_model="all-MiniLM-L6-v2", label_names=LABELS
    )
    ours = project_probabilities(global_model_at_rmax(load_encoder(base), spec, vector), tokenizer, LABELS)

    assert_same_scores(run_stock_loader(folder, base, tmp_path), ours, LABELS)


def test_the_exported_config_names_the_shipped_class_and_the_labels():
    files = classifier_files(
        base_config={
            "model_type": "bert",
            "hidden_size": 32,
            "architectures": ["BertModel"],
            "_name_or_path": "/x",
            "problem_type": "multi_label_classification",
            "dtype": "float16",
            "torch_dtype": "float16",
        },
        num_labels=2,
        label_names=None,
        max_length=48,
    )
    config = json.loads(files["config.json"])
    # Softmax scores in float32, truncated where the federation trains, whatever the base's checkpoint says.
    assert config["problem_type"] == "single_label_classification"
    assert config["dtype"] == "float32" and "torch_dtype" not in config
    assert config["fedlora_max_length"] == 48
    assert config["auto_map"] == {
        "AutoModelForSequenceClassification": "modeling_fedlora.FedLoraBertClassifier"
    }
    assert config["architectures"] == ["FedLoraBertClassifier"]
    assert config["id2label"] == {"0": "LABEL_0", "1": "LABEL_1"}
    assert "_name_or_path" not in config and config["hidden_size"] == 32
    shipped = files["modeling_fedlora.py"].decode()
    imported = set(re.findall(r"^(?:from|import) ([\w.]+)", shipped, flags=re.MULTILINE))
    assert {name.split(".")[0] for name in imported} <= {"__future__", "typing", "torch", "transformers"}


def test_a_roberta_config_gets_the_roberta_class():
    base = RobertaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config = json.loads(
        classifier_files(base_config=base.to_dict(), num_labels=2, label_names=None)["config.json"]
    )
    assert config["auto_map"]["AutoModelForSequenceClassification"].endswith(".FedLoraRobertaClassifier")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_config": {"model_type": "gpt2"}}, r"model_type must be one of .* got 'gpt2'"),
        ({"label_names": ["a", "a"]}, r"label_names must name 2 distinct classes, got \['a', 'a'\]"),
        ({"num_labels": 1, "label_names": ["a"]}, r"num_labels must be at least 2, got 1"),
        ({"label_names": ["a", "b" * 129]}, r"label_names must be strings of 1 to 128 characters, got 'bbb"),
        ({"label_names": ["a", None]}, r"label_names must be strings of 1 to 128 characters, got None"),
        ({"max_length": 0}, r"max_length must be a positive number of tokens, got 0"),
    ],
)
def test_what_cannot_be_exported_is_refused_by_name(kwargs, message):
    arguments = {"base_config": {"model_type": "bert"}, "num_labels": 2, "label_names": None, **kwargs}
    with pytest.raises(ClassifierExportError, match=message):
        classifier_files(**arguments)


def test_the_readme_publishes_the_digest_of_the_shipped_model_file():
    """The README's snippet refuses any `modeling_fedlora.py` whose SHA-256 is not the one it prints: that
    digest must be the shipped file's, so a change to the file fails here until the README follows."""
    published = re.findall(r'^GENUINE = "([0-9a-f]{64})"$', readme_snippet(), flags=re.MULTILINE)
    shipped = classifier_files(base_config={"model_type": "bert"}, num_labels=2, label_names=None)[
        "modeling_fedlora.py"
    ]
    modeling_file = Path(__file__).resolve().parents[2] / "services" / "modeling_fedlora.py"

    assert published == [hashlib.sha256(modeling_file.read_bytes()).hexdigest()]
    assert shipped == modeling_file.read_bytes()


def test_a_vector_with_a_nan_stops_the_export_before_any_file(tokenizer, tiny_base, tmp_path):
    model = FFAClassifier(load_encoder(tiny_base), SPEC, rank=SPEC.r_max)
    vector = np.zeros(model.layout.size, dtype=np.float32)
    vector[[2, 9]] = [np.nan, -np.inf]

    with pytest.raises(
        AdapterVectorError, match=r"vector holds 2 non-finite values \(first at index 2: nan\)"
    ):
        export_adapter(model, vector, tmp_path / "adapter", base_model="tiny")
    assert not (tmp_path / "adapter").exists()
