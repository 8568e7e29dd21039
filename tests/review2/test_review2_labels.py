"""Review 2: the hospital agent's label mapping depends on its data, so one record moves every other one.

`ClientAgent.run` loads `FEDLORA_DATA_FILE` with `load_file(settings.data_file)` and no `label_names`, so
the classes are "the distinct labels found, sorted" (docs/data.md) and label index i is the i-th of them.
Whether a class value occurs at all is a property of the data set: removing the only record labelled
"no" from a file of "no"/"yes" notes maps every "yes" from 1 to 0. DP-SGD's guarantee (and the docs'
example-level row: "one patient record added to or removed from one hospital") assumes that one record
changes one per-example gradient; here it flips the targets of all the others. (A third label value in
the file gives index 2 for a spec with num_labels = 2, and training crashes, which the cloud sees as a
missing upload.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset
from transformers import AutoTokenizer

from client_agent.agent import load_hospital_data
from client_agent.model import default_model_path
from client_agent.train import DPSettings, LocalConfig, _dp_steps, encode
from protocol.messages import TrainingConfig
from services.settings import ClientSettings
from tests.unit.test_private_randomness import model_for, spec

CLIP = 0.05
NOTES = [f"note {i}: patient seen in clinic, plan reviewed" for i in range(16)]


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
    """D: 16 notes labelled "yes" and one labelled "no"; D': the same file without the "no" record."""
    rows = [(t, "yes") for t in NOTES]
    with_no = load_hospital_data(write(tmp_path / "d.csv", [("note x: declined follow-up", "no"), *rows]))
    without = load_hospital_data(write(tmp_path / "d_prime.csv", rows))
    return with_no, without


def test_removing_one_record_changes_the_label_of_every_other_record(tmp_path) -> None:
    with_no, without = datasets(tmp_path)
    assert with_no.texts[1:] == without.texts  # the 16 shared records, same text
    assert with_no.labels[1:] == without.labels, (
        f"shared records labelled {sorted(set(with_no.labels[1:]))} in D ({with_no.label_names}) and "
        f"{sorted(set(without.labels))} in D' ({without.label_names})"
    )


def test_one_dp_sgd_step_moves_by_more_than_the_clip_norm_between_adjacent_files(tmp_path, tokenizer) -> None:
    """The agent's data path, then one DP-SGD step of `_dp_steps` with sigma = 0 at sample rate 1 (so the
    summed clipped gradient is visible): between D and D' it must move by at most max_grad_norm (one
    record's clipped gradient). It moves by ~30 of them: the 16 shared records' targets flipped."""
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
        )
        return model.delta_from(start).astype(np.float64)

    with_no, without = datasets(tmp_path)
    moved = float(np.linalg.norm(one_step(with_no) - one_step(without))) * 16.0 / CLIP
    assert moved <= 1.0 + 1e-4, (
        f"one record removed moved the summed clipped gradient by {moved:.1f} clip norms"
    )
