"""Issue 24, items 3 and 4, reviewed from a fresh context: the exported classification adapter in a stock
`pipeline("text-classification")` (README, "Using the exported adapter") and `FEDLORA_DEVICE`.

Each test was a strict xfail reproducing a promise that did not hold on main at 9f56a02 (now fixed) or an attack
that held. The stock side is always the README's snippet, as written, in a fresh interpreter that imports
nothing of the project (`run_readme_snippet`); the project's side is its own evaluation path
(`client_agent.train.encode` at the federation's `max_seq_length`, then `FFAClassifier.forward_from`) for the
same global vector, so the expected scores never come from the exported files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    RobertaConfig,
    RobertaModel,
)

from client_agent.export import export_adapter
from client_agent.model import AdapterSpec, FFAClassifier, default_model_path, load_encoder
from client_agent.train import encode
from protocol.messages import TrainingConfig
from services.classifier_export import MODELING_FILE
from tests.models import global_model_at_rmax
from tests.stock_pipeline import PROJECT_PACKAGES, readme_snippet

SPEC = AdapterSpec(
    num_labels=3, target_modules=("query", "value"), layers_to_transform=(1, 2), r_max=4, alpha=4.0, seed=7
)
LABELS = ("negative", "neutral", "positive")
SHORT = "the adapter must give the same scores"
#: About 300 word pieces: past the federation's default `max_seq_length` (64), inside MiniLM's 512.
LONG = " ".join(f"word{i} is here" for i in range(100))
#: The sequence length a federation trains and evaluates at unless its spec says otherwise.
MAX_SEQ = TrainingConfig().max_seq_length


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


def save_tiny_base(
    folder: Path,
    tokenizer,
    kind: str = "bert",
    *,
    padding_side: str = "right",
    half: bool = False,
    **config_fields,
) -> Path:
    """A tiny random encoder saved as a hospital's base model folder (in float16 with `half`), with the
    MiniLM tokenizer."""
    sizes = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64}
    torch.manual_seed(11)
    if kind == "bert":
        config = BertConfig(vocab_size=tokenizer.vocab_size, **sizes, **config_fields)
        encoder = BertModel(config, add_pooling_layer=False)
        (encoder.to(torch.float16) if half else encoder).save_pretrained(folder)
    else:
        config = RobertaConfig(vocab_size=tokenizer.vocab_size, type_vocab_size=1, **sizes, **config_fields)
        RobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.padding_side = padding_side
    try:
        tokenizer.save_pretrained(folder)
    finally:
        tokenizer.padding_side = "right"
    return folder


def exported(
    base: Path, folder: Path, labels: Sequence[str] = LABELS, spec: AdapterSpec = SPEC
) -> tuple[Path, np.ndarray]:
    """A global vector far from zero, exported by the hospital's own `export_adapter`."""
    model = FFAClassifier(load_encoder(base), spec, rank=spec.r_max)
    vector = np.random.default_rng(5).normal(scale=0.5, size=model.layout.size).astype(np.float32)
    return export_adapter(model, vector, folder, base_model="tiny", label_names=labels), vector


def project_scores(
    base: Path,
    vector: np.ndarray,
    texts: Sequence[str],
    labels: Sequence[str] = LABELS,
    spec: AdapterSpec = SPEC,
) -> list[dict[str, float]]:
    """The project's own scores: its evaluation path (`encode` at `max_seq_length`, `forward_from`)."""
    model = global_model_at_rmax(load_encoder(base), spec, vector)
    tokenizer = AutoTokenizer.from_pretrained(base)
    features = encode(model, tokenizer, list(texts), [0] * len(texts), max_length=MAX_SEQ)
    with torch.no_grad():
        probabilities = torch.softmax(model.forward_from(features.hidden, features.mask), dim=-1)
    return [{labels[i]: float(p) for i, p in enumerate(row)} for row in probabilities]


def run_readme_snippet(
    adapter: Path, base: Path, workdir: Path, texts: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    """The README's snippet on `adapter` and `base` in a fresh interpreter; its last stdout line is each
    text's label -> score as JSON (the snippet's own `classify(...)` call, `truncation=True`)."""
    code = readme_snippet()
    code, swapped = re.subn(r"^adapter = .*$", f"adapter = {str(adapter)!r}", code, flags=re.MULTILINE)
    code, swapped_base = re.subn(r"^base = .*$", f"base = {str(base)!r}", code, flags=re.MULTILINE)
    assert swapped == swapped_base == 1
    code = code.replace("print(classify(", "_readme_output = (classify(")
    code += (
        "import json, sys\n"
        f"assert not [m for m in sys.modules if m.split('.')[0] in {PROJECT_PACKAGES!r}]\n"
        f"print(json.dumps(classify({list(texts)!r}, top_k=None, truncation=True)))\n"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(workdir / "hf-modules"), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )


def stock_scores(adapter: Path, base: Path, workdir: Path, texts: Sequence[str]) -> list[dict[str, float]]:
    done = run_readme_snippet(adapter, base, workdir, texts)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    return [{item["label"]: item["score"] for item in answer} for answer in answers]


def assert_same(stock: list[dict[str, float]], ours: list[dict[str, float]]) -> None:
    assert [set(row) for row in stock] == [set(row) for row in ours]
    for stock_row, our_row in zip(stock, ours, strict=True):
        for label, score in our_row.items():
            assert stock_row[label] == pytest.approx(score, abs=1e-5), (stock, ours)
    # Far from uniform, so that a dropped adapter or head could not pass.
    assert max(max(row.values()) - min(row.values()) for row in ours) > 0.05


# -- (1) the stock pipeline's scores equal the project's --------------------------------------------------


def test_odd_label_names_five_labels_and_a_roberta_padding_id_hold(tokenizer, tmp_path):
    """Held: label names that look like ids, quotes, a newline and `../`, in an order unlike LABEL_i, on a
    RoBERTa base whose position ids count from padding id 1, give the project's scores label by label."""
    labels = ("1", "LABEL_0", "a\"b'c\nd", "../é x", "0")
    spec = AdapterSpec(
        num_labels=5, target_modules=("query", "value"), layers_to_transform=(1, 2), r_max=4, alpha=4.0
    )
    base = save_tiny_base(tmp_path / "base", tokenizer, "roberta", pad_token_id=1)
    adapter, vector = exported(base, tmp_path / "adapter", labels, spec)

    texts = [SHORT, "a second text"]
    assert_same(
        stock_scores(adapter, base, tmp_path, texts), project_scores(base, vector, texts, labels, spec)
    )


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "regression"])
def test_a_base_config_with_a_problem_type_still_gets_softmax_scores(tokenizer, tmp_path, problem_type):
    """A hospital's base that was itself fine-tuned for a task (a clinical BERT for multi-label coding) has
    `problem_type` in its config.json. The export copies it into the adapter's config.json, and
    `TextClassificationPipeline.postprocess` picks its function from it: the scores are no longer the
    softmax the federation trained with cross-entropy (they do not even sum to 1)."""
    base = save_tiny_base(tmp_path / "base", tokenizer, problem_type=problem_type)
    adapter, vector = exported(base, tmp_path / "adapter")

    stock = stock_scores(adapter, base, tmp_path, [SHORT])
    assert_same(stock, project_scores(base, vector, [SHORT]))


def test_a_long_input_gets_the_scores_the_project_evaluates(tokenizer, tmp_path):
    """A note longer than the federation's `max_seq_length`: the project classifies its first 64 tokens
    (`encode(..., truncation=True, max_length=max_seq_length)`), the stock pipeline all ~300 of them, so
    the same adapter gives the hospital different scores from the ones the federation evaluated. Short
    inputs agree (checked first, so the failure is the truncation alone)."""
    base = save_tiny_base(tmp_path / "base", tokenizer)
    adapter, vector = exported(base, tmp_path / "adapter")
    assert len(tokenizer(LONG)["input_ids"]) > 4 * MAX_SEQ

    stock = stock_scores(adapter, base, tmp_path, [SHORT, LONG])
    ours = project_scores(base, vector, [SHORT, LONG])
    assert_same(stock[:1], ours[:1])
    assert_same(stock[1:], ours[1:])


def test_a_long_input_on_a_base_with_few_positions_is_classified(tokenizer, tmp_path):
    """The base has 128 positions and the MiniLM tokenizer's `model_max_length` of 512 (sentence-transformers
    checkpoints ship such pairs: MiniLM's own model card truncates at 256). The federation trains at 64
    tokens and the project classifies the note; the stock snippet, `truncation=True` as the README writes
    it, feeds ~300 positions to a 128-position embedding and fails."""
    base = save_tiny_base(tmp_path / "base", tokenizer, max_position_embeddings=128)
    adapter, vector = exported(base, tmp_path / "adapter")
    ours = project_scores(base, vector, [LONG])

    done = run_readme_snippet(adapter, base, tmp_path, [LONG])
    assert done.returncode == 0, done.stderr[-2000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert_same([{item["label"]: item["score"] for item in answers[0]}], ours)


def test_a_left_padding_tokenizer_gives_the_projects_scores(tokenizer, tmp_path):
    """A base whose tokenizer pads on the left (`padding_side: left` in tokenizer_config.json). The project's
    evaluation pads a short text to 64 tokens on the left, so BERT's absolute positions of the real tokens
    start at 64 - n; the pipeline, one text at a time, pads nothing. Same adapter, same text, two scores."""
    base = save_tiny_base(tmp_path / "base", tokenizer, padding_side="left")
    assert AutoTokenizer.from_pretrained(base).padding_side == "left"
    adapter, vector = exported(base, tmp_path / "adapter")

    assert_same(stock_scores(adapter, base, tmp_path, [SHORT]), project_scores(base, vector, [SHORT]))


def test_a_base_saved_in_float16_is_run_in_float32_by_both(tokenizer, tmp_path):
    """A hospital's base checkpoint saved in float16, as most recent checkpoints are. `client_agent.device`
    rules out 16-bit arithmetic for DP-SGD (clipping must hold in float32), yet `load_encoder` keeps the
    checkpoint's float16; the project's own model then fails with an untyped dtype RuntimeError, and the
    README's snippet gives half-precision scores. Expected: both in float32, equal within 1e-5."""
    base = save_tiny_base(tmp_path / "base", tokenizer, half=True)
    assert {t.dtype for t in load_file(str(base / "model.safetensors")).values()} == {torch.float16}
    adapter, vector = exported(base, tmp_path / "adapter")

    assert next(load_encoder(base).parameters()).dtype == torch.float32
    assert_same(stock_scores(adapter, base, tmp_path, [SHORT]), project_scores(base, vector, [SHORT]))


def test_a_base_that_is_a_classifier_with_other_labels_runs_in_the_pipeline(tokenizer, tmp_path):
    """The issue's own example: a hospital adapts the clinical BERT it already uses for coding notes, a
    `BertForSequenceClassification` checkpoint with 5 labels, in a federation of 3. The project (bare
    `AutoModel`, its own head) trains and scores it; the README's snippet cannot load it. (With the same
    number of labels it loads, and peft's `modules_to_save` replaces the old head: that held.)"""
    base = tmp_path / "base"
    torch.manual_seed(11)
    sizes = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64}
    config = BertConfig(vocab_size=tokenizer.vocab_size, num_labels=5, **sizes)
    BertForSequenceClassification(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    adapter, vector = exported(base, tmp_path / "adapter")
    ours = project_scores(base, vector, [SHORT])

    assert_same(stock_scores(adapter, base, tmp_path, [SHORT]), ours)


# -- (3) what code a hospital's loader executes ------------------------------------------------------------

MARKER_CODE = "\nimport pathlib as _p\n_p.Path({marker!r}).write_text('the shipped file ran')\n"


def test_a_tampered_model_file_in_the_adapter_is_not_executed(tokenizer, tmp_path):
    """A cloud (or anyone on the way of a zip a hospital unpacks) appends one statement to the shipped model
    file. The README's snippet, run as written, executes it: here it writes a marker file; it could read
    the hospital's notes. The genuine file is `services/modeling_fedlora.py` of the hospital's own release,
    and nothing compares the two."""
    base = save_tiny_base(tmp_path / "base", tokenizer)
    adapter, _ = exported(base, tmp_path / "adapter")
    marker = tmp_path / "pwned.txt"
    shipped = adapter / MODELING_FILE
    shipped.write_text(shipped.read_text() + MARKER_CODE.format(marker=str(marker)))

    done = run_readme_snippet(adapter, base, tmp_path, [SHORT])

    assert not marker.exists(), "the tampered model file ran inside the README's loader"
    assert done.returncode != 0, "the README's loader accepted a model file that is not the genuine one"


def test_an_auto_map_naming_another_module_is_not_followed(tokenizer, tmp_path):
    """The genuine `modeling_fedlora.py` is left untouched (a digest check of that one file would pass); the
    zip adds `helpers.py`, a copy of it with one statement more, and its config.json's `auto_map` names
    `helpers.FedLoraBertClassifier`. The README's snippet loads and runs `helpers.py`."""
    base = save_tiny_base(tmp_path / "base", tokenizer)
    adapter, _ = exported(base, tmp_path / "adapter")
    marker = tmp_path / "pwned.txt"
    genuine = (adapter / MODELING_FILE).read_text()
    (adapter / "helpers.py").write_text(genuine + MARKER_CODE.format(marker=str(marker)))
    config = json.loads((adapter / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "helpers.FedLoraBertClassifier"}
    (adapter / "config.json").write_text(json.dumps(config))

    done = run_readme_snippet(adapter, base, tmp_path, [SHORT])

    assert not marker.exists(), "a module other than the shipped model file ran inside the README's loader"
    assert done.returncode != 0


def test_label_and_base_names_stay_data_in_the_cloud_zip_entries(tokenizer, tmp_path):
    """Held: label names and a `base_model` that look like paths or code reach only JSON string values; the
    zip the cloud builds has the four fixed entry names and nothing outside them. (`base_model` may be any
    string up to 256 characters, a URL or `../x` included: `base_model_name_or_path` is not read by the
    README's snippet, which loads the base the hospital names.)"""
    from protocol.peft_format import adapter_files
    from services.classifier_export import classifier_files

    base = save_tiny_base(tmp_path / "base", tokenizer)
    model = FFAClassifier(load_encoder(base), SPEC, rank=SPEC.r_max)
    labels = ("../../etc/passwd", "__import__('os').system('id')", "a/b\\c")
    files = {
        **adapter_files(
            layout=model.layout,
            vector=np.zeros(model.layout.size, dtype=np.float32),
            in_features=model.in_features(),
            seed=SPEC.seed,
            basis_version=0,
            alpha=SPEC.alpha,
            target_modules=SPEC.target_modules,
            layers_to_transform=SPEC.layers_to_transform,
            base_model="../../../tmp/evil",
        ).files,
        **classifier_files(
            base_config=json.loads((base / "config.json").read_text()), num_labels=3, label_names=labels
        ),
    }
    assert sorted(files) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "config.json",
        "modeling_fedlora.py",
    ]
    config = json.loads(files["config.json"])
    assert config["id2label"] == {str(i): name for i, name in enumerate(labels)}
    assert config["auto_map"] == {
        "AutoModelForSequenceClassification": "modeling_fedlora.FedLoraBertClassifier"
    }
    archive_path = tmp_path / "a.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with zipfile.ZipFile(archive_path) as archive:
        assert all("/" not in name and ".." not in name for name in archive.namelist())


# -- (4) bad input to the export -------------------------------------------------------------------------


def tiny_model(tokenizer, folder: Path) -> FFAClassifier:
    return FFAClassifier(load_encoder(save_tiny_base(folder, tokenizer)), SPEC, rank=SPEC.r_max)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_global_vector_is_refused_by_name(tokenizer, tmp_path, bad):
    """A global vector with one non-finite value (a corrupt download, a broken decryption) is written into
    `adapter_model.safetensors` without a word; a typed error naming the vector is expected, and nothing
    written."""
    model = tiny_model(tokenizer, tmp_path / "base")
    vector = np.zeros(model.layout.size, dtype=np.float32)
    vector[3] = bad
    folder = tmp_path / "adapter"

    with pytest.raises(ValueError, match=r"(?i)vector"):
        export_adapter(model, vector, folder, base_model="tiny", label_names=LABELS)
    assert not folder.exists() or not any(folder.iterdir())


@pytest.mark.parametrize("names", [("", "neutral", "positive"), (0, 1, 2)], ids=["empty", "not-a-string"])
def test_a_label_name_the_federation_spec_would_refuse_is_refused_by_the_export(tokenizer, tmp_path, names):
    """The federation's wire spec says a label name is a string of 1 to 128 characters; `export_adapter`
    (fed `Dataset.label_names` by `client_agent.local_run`) accepts "" and integers, and the pipeline then
    answers with a blank label or an int where the spec promises names."""
    from services.classifier_export import ClassifierExportError

    model = tiny_model(tokenizer, tmp_path / "base")
    vector = np.zeros(model.layout.size, dtype=np.float32)

    with pytest.raises(ClassifierExportError, match="label_names"):
        export_adapter(model, vector, tmp_path / "adapter", base_model="tiny", label_names=names)


# -- (5) FEDLORA_DEVICE -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["gpu", "cuda:-1", "cuda:x", "cuda0", "cuda:1"])
def test_a_malformed_or_absent_device_stops_the_agent_naming_the_variable(value):
    """Held: `resolve_device` refuses these by the variable and the value (cuda:1 with one device), and
    never falls back to the CPU."""
    from client_agent.device import DeviceError, resolve_device

    with pytest.raises(DeviceError, match=rf"FEDLORA_DEVICE.*{re.escape(repr(value))}"):
        resolve_device(value, cuda_devices=1)


def test_a_long_malformed_device_stops_the_agent_naming_the_variable(tmp_path):
    """`FEDLORA_DEVICE=cuda:0,cuda:1,cuda:2` (an operator asking for three GPUs): `python -m client_agent`
    stops, but says `device: String should have at most 16 characters`, unlike every shorter bad value."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEDLORA_")}
    env.update(
        FEDLORA_DEVICE="cuda:0,cuda:1,cuda:2",
        FEDLORA_CLIENT_ID="client-a",
        FEDLORA_FEDERATION_ID="fed-1",
        FEDLORA_EDGE_ID="edge-1",
        FEDLORA_CLOUD_URL="http://127.0.0.1:9",
        FEDLORA_STATE_DIR=str(tmp_path / "state"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    done = subprocess.run(
        [sys.executable, "-m", "client_agent"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode != 0
    assert "FEDLORA_DEVICE" in done.stderr and "cuda:0,cuda:1,cuda:2" in done.stderr, done.stderr[-1500:]
