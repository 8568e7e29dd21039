"""A hospital's data and state against one record added or removed, as a second review of issue 16 attacked
them: labels map by the federation's class names (a file's own class list relabelled every other record),
a lost state.json stops the agent (it would draw its count again and start its budget over), and an empty
Poisson batch is a noise-only step (it crashed the encoder)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset
from transformers import AutoTokenizer

from client_agent.agent import labelled_for, load_hospital_data
from client_agent.errors import AgentError
from client_agent.model import default_model_path
from client_agent.releases import PublicCounts
from client_agent.train import DPSettings, LocalConfig, StepCount, _dp_steps, encode
from protocol.messages import LocalDPConfig, TrainingConfig
from services.settings import ClientSettings
from tests.hospitals import hospital_agent
from tests.unit.test_private_randomness import hospital, model_for, plan_for, spec

CLIP = 0.05
NOTES = [f"note {i}: patient seen in clinic, plan reviewed" for i in range(16)]
LABELLED = spec(label_names=("no", "yes"))


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


def write(path, rows) -> ClientSettings:
    path.write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
    return ClientSettings(
        client_id="hosp-a",
        federation_id="onco",
        edge_id="edge-1",
        cloud_url="https://cloud.example",
        enrolment_token="enrol-token-0123456789abcdef",
        state_dir=path.parent / "state",
        data_file=path,
    )


def datasets(tmp_path):
    """D: 16 notes labelled "yes" and one labelled "no"; D': the same file without the "no" record, each
    mapped to the federation's classes as the agent maps them."""
    rows = [(t, "yes") for t in NOTES]
    with_no = load_hospital_data(write(tmp_path / "d.csv", [("note x: declined follow-up", "no"), *rows]))
    without = load_hospital_data(write(tmp_path / "d_prime.csv", rows))
    return labelled_for(with_no, LABELLED), labelled_for(without, LABELLED)


def test_removing_one_record_changes_no_other_records_label(tmp_path) -> None:
    with_no, without = datasets(tmp_path)
    assert with_no.texts[1:] == without.texts
    assert with_no.labels[1:] == without.labels == [1] * 16
    assert with_no.label_names == without.label_names == ("no", "yes")


def test_a_label_the_federation_does_not_have_is_refused_and_integers_are_the_default(tmp_path) -> None:
    third = load_hospital_data(write(tmp_path / "d.csv", [(NOTES[0], "yes"), (NOTES[1], "maybe")]))
    with pytest.raises(AgentError, match=r"1 labels that federation 'onco' does not have"):
        labelled_for(third, LABELLED)
    numbered = load_hospital_data(write(tmp_path / "n.csv", [(NOTES[0], 1), (NOTES[1], 1)]))
    mapped = labelled_for(numbered, spec())  # no label_names: the classes are 0 and 1
    assert mapped.labels == [1, 1] and mapped.label_names == ("0", "1")


def test_one_dp_sgd_step_moves_by_at_most_the_clip_norm_between_adjacent_files(tmp_path, tokenizer) -> None:
    """The agent's data path, then one DP-SGD step of `_dp_steps` with sigma = 0 at sample rate 1 (so the
    summed clipped gradient is visible): between D and D' it must move by at most max_grad_norm (one
    record's clipped gradient). With the file's own class list it moved by 31 of them: the 16 shared
    records' targets flipped."""
    the_spec = spec(training=TrainingConfig(local_steps=1, batch_size=16, learning_rate=1.0), rounds=1)
    model = model_for(the_spec, tokenizer)
    start = np.random.default_rng(0).normal(0.0, 0.5, model.layout.size).astype(np.float32)

    def one_step(data) -> np.ndarray:
        features = encode(model, tokenizer, data.texts, data.labels, max_length=8)
        model.load_global(start)
        optimizer = torch.optim.SGD(model.trainable_parameters(), lr=1.0)
        config = LocalConfig(
            steps=1,
            batch_size=16,
            learning_rate=1.0,
            progress=False,
            dp=DPSettings(epsilon=8.0, max_grad_norm=CLIP),
        )
        _dp_steps(
            model,
            optimizer,
            TensorDataset(features.hidden, features.mask, features.labels),
            config,
            sample_rate=1.0,
            sigma=0.0,
            expected_batch=16.0,
            sampling=torch.Generator().manual_seed(1),
            noise=torch.Generator().manual_seed(2),
            count=StepCount(),
        )
        return model.delta_from(start).astype(np.float64)

    with_no, without = datasets(tmp_path)
    moved = float(np.linalg.norm(one_step(with_no) - one_step(without))) * 16.0 / CLIP
    assert moved <= 1.0 + 1e-4, (
        f"one record removed moved the summed clipped gradient by {moved:.1f} clip norms"
    )


def test_a_hospital_whose_state_json_is_lost_does_not_start_again(tmp_path) -> None:
    """The key says this hospital took part; without state.json it would draw its count again, split its
    data anew and start its histories from zero on data that has spent budget (the review's hospital
    trained 2 more rounds past a budget of 2, reaching 2.76)."""
    first = hospital_agent(tmp_path)
    first.public_count(40)
    (first.state_path).unlink()  # lost, or re-created by hand; signing-key.bin kept
    with pytest.raises(AgentError, match=r"holds this hospital's key but not its state\.json"):
        hospital_agent(tmp_path)
    # A fresh folder is a fresh hospital; a folder with its state starts as before.
    assert hospital_agent(tmp_path, state="other").state.public_examples is None
    first.state.save(first.state_path)
    assert hospital_agent(tmp_path).state.public_examples == first.state.public_examples


def test_an_empty_poisson_batch_is_a_noise_only_step_not_a_crash(tmp_path, tokenizer) -> None:
    """The agent's `_train` on 16 training notes whose public count is 60, batch 16 (q = 1/4), 300 steps:
    an empty batch is all but certain (1 - (1 - 0.75^16)^300 = 95%)."""
    the_spec = spec(
        training=TrainingConfig(local_steps=300, batch_size=16, learning_rate=0.5),
        local_dp=LocalDPConfig(epsilon=8.0, max_grad_norm=1.0),
        rounds=1,
    )
    model = model_for(the_spec, tokenizer)
    features = encode(
        model, tokenizer, [f"note {i}" for i in range(16)], [i % 2 for i in range(16)], max_length=8
    )
    start = np.zeros(model.layout.size, dtype=np.float32)
    site = hospital(tmp_path, "a")
    result = site._train(model, features, start, plan_for(the_spec), the_spec, PublicCounts.derive(60, None))
    assert result.steps == 300 and np.isfinite(result.delta).all()
