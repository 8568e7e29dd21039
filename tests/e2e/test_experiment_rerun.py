"""An experiment rerun from its config gives the same table, and the simulation's feature cache returns
what a fresh encoding would (both on the tiny model)."""

import csv
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from transformers import AutoTokenizer

from client_agent.data import task_split
from client_agent.model import AdapterSpec, FFAClassifier, load_encoder
from client_agent.train import encode
from fedlora import simulation
from fedlora.experiments.paper_tables import TableConfig, run_table
from fedlora.simulation import SimulationConfig, encoded, federation_spec


def _table(model_dir: Path) -> TableConfig:
    # DP-SGD at one setting and none at the other, two seeds; plaintext sums, so that nothing draws from
    # the operating system (CKKS' encryption noise would move the sums by ~1e-9).
    return TableConfig(
        "privacy",
        epsilons=(3.0, None),
        seeds=(0, 1),
        rounds=2,
        steps=3,
        batch_size=16,
        max_train_examples=180,
        max_test_examples=60,
        layers_to_transform=(1,),
        target_modules=("query", "value"),
        rank=2,
        scheme="none",
        model_path=str(model_dir),
    )


def _numbers(path: Path) -> list[dict[str, str]]:
    """Every line of results.csv but its wall time."""
    with path.open() as handle:
        return [{k: v for k, v in line.items() if k != "seconds"} for line in csv.DictReader(handle)]


def test_a_table_rerun_from_its_config_json_gives_the_same_numbers(tiny_model_dir, tmp_path):
    first = tmp_path / "first"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_table(_table(tiny_model_dir), first)
        simulation._ENCODED.clear()  # the rerun encodes the texts again, as a new process would
        config = json.loads((first / "config.json").read_text())["config"]
        run_table(TableConfig.from_dict(config), tmp_path / "second")

    numbers = _numbers(first / "results.csv")
    assert len(numbers) == 2 * 2 * 2 * 3  # settings x methods x seeds x (round 0 and two rounds)
    assert numbers == _numbers(tmp_path / "second" / "results.csv")
    # The seeds are different federations, not copies of one.
    by_seed = {seed: [n["test_accuracy"] for n in numbers if n["seed"] == seed] for seed in ("0", "1")}
    assert by_seed["0"] != by_seed["1"]


def test_cached_features_equal_a_fresh_encoding_and_a_changed_model_is_encoded_again(
    tiny_model_dir, tmp_path
):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    config = SimulationConfig(
        hospitals=2,
        edges=1,
        max_train_examples=40,
        max_test_examples=10,
        epsilon=None,
        scheme="none",
        target_modules=("value",),
        layers_to_transform=(1,),
        model_path=model_dir,
        out_dir=tmp_path / "out",
    )
    train, _ = task_split(config.task, seed=0, test_fraction=0.1, max_train_examples=40, max_test_examples=10)
    spec = federation_spec(config, num_labels=train.n_classes)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = FFAClassifier(load_encoder(model_dir), AdapterSpec.from_federation(spec), rank=2)
    simulation._ENCODED.clear()

    cached = encoded(model, tokenizer, model_dir, train, 16)
    fresh = encode(model, tokenizer, train.texts, train.labels, max_length=16)

    assert encoded(model, tokenizer, model_dir, train, 16) is cached
    assert torch.equal(cached.hidden, fresh.hidden) and torch.equal(cached.mask, fresh.mask)
    assert torch.equal(cached.labels, fresh.labels)
    assert encoded(model, tokenizer, model_dir, train, 12) is not cached  # another sequence length
    weights = next(p for p in model_dir.iterdir() if p.suffix == ".safetensors")
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert encoded(model, tokenizer, model_dir, train, 16) is not cached  # the folder was rewritten
