"""Three hospital agents fine-tune a tiny Llama (random init from a config, saved to a folder) on
`drug_condition_qa` with FFA-LoRA and DP-SGD, through a real cloud and edge (separate uvicorn processes).

The global adapter the cloud serves as a PEFT zip is loaded with stock `peft` into `AutoModelForCausalLM`,
and its logits must equal the project's own model's, built from the adapter vector, within 1e-5.
"""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import peft
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from client_agent.causal_lm import FFACausalLM, load_causal_lm
from client_agent.causal_train import encode_pairs
from client_agent.data.tasks import drug_condition_qa
from client_agent.model import AdapterSpec
from protocol.messages import (
    FederationCreated,
    FederationInfo,
    FederationState,
    LocalDPConfig,
    PrivacyReport,
    TaskType,
    TrainingConfig,
)
from tests.decoders import save_decoder, tiny_llama
from tests.e2e.conftest import CloudProcess, EdgeProcess, issue_enrolment_token
from tests.e2e.helpers import FID, NOTES, adapter_vector, make_spec
from tests.e2e.test_agents_e2e import run_to_the_end

pytestmark = pytest.mark.slow
HOSPITALS = ("h-a", "h-b", "h-c")
TARGETS = ("q_proj", "v_proj")


def write_pairs(path, rows) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def test_three_hospitals_fine_tune_a_tiny_llama_with_dp_and_stock_peft_loads_the_result(
    cluster, tmp_path
) -> None:
    model_dir = save_decoder(tiny_llama(), tmp_path / "tiny-llama")
    cloud = CloudProcess(cluster, tmp_path, model_dir)
    spec = make_spec(
        base_model="tiny-llama",
        task_type=TaskType.CAUSAL_LM,
        target_modules=TARGETS,
        layers_to_transform=(1,),
        r_max=2,
        rounds=2,
        local_dp=LocalDPConfig(epsilon=8.0, delta=1e-5, max_grad_norm=1.0),
        training=TrainingConfig(local_steps=3, batch_size=16, max_seq_length=32, learning_rate=0.5),
        round_deadline_s=240,
        upload_deadline_s=200,
    )
    response = cloud.admin.post("/federations", json=spec.model_dump(mode="json"))
    assert response.status_code == 201, response.text
    FederationCreated.model_validate_json(response.content)
    created = FederationInfo.model_validate_json(cloud.admin.get(f"/federations/{FID}").content)
    # q_proj 32 x 2 and v_proj (2 key/value heads of 8) 16 x 2 of layer 1: no head.
    assert created.layout_size == (32 + 16) * 2
    EdgeProcess(cluster, tmp_path, cloud, "edge-1", FID)

    qa = drug_condition_qa()
    pairs = [(text, qa.label_names[label]) for text, label in zip(qa.texts, qa.labels, strict=True)]
    for index, client_id in enumerate(HOSPITALS):
        data = tmp_path / f"{client_id}.csv"
        write_pairs(data, pairs[index * NOTES : (index + 1) * NOTES])
        cluster.start(
            client_id,
            "client_agent",
            {
                "FEDLORA_CLIENT_ID": client_id,
                "FEDLORA_FEDERATION_ID": FID,
                "FEDLORA_EDGE_ID": "edge-1",
                "FEDLORA_CLOUD_URL": cloud.url,
                "FEDLORA_ENROLMENT_TOKEN": issue_enrolment_token(cloud, FID, "client", client_id),
                "FEDLORA_STATE_DIR": str(tmp_path / "state" / client_id),
                "FEDLORA_DATA_FILE": str(data),
                "FEDLORA_MODEL_PATH": str(model_dir),
                "FEDLORA_THREADS": "1",
                "FEDLORA_POLL_S": "0.5",
                "FEDLORA_ALLOW_UNMASKED": "true",  # a CKKS federation, without masking
            },
        )
    info = run_to_the_end(cloud, cluster, enrolled=3, timeout_s=400)
    assert info.state is FederationState.COMPLETED and info.adapter_version == 2

    # Every hospital trained with DP-SGD: its example-level history is in the ledger, within its budget.
    report = PrivacyReport.model_validate_json(cloud.admin.get(f"/federations/{FID}/privacy").content)
    assert sorted(c.client_id for c in report.clients) == sorted(HOSPITALS)
    for client in report.clients:
        assert [r.round for r in client.rounds] == [0, 1]
        assert 0.0 < client.local_epsilon <= 8.0 * 1.02

    vector = adapter_vector(cloud, 2)
    assert np.abs(vector).max() > 0  # the hospitals' updates moved B
    response = cloud.admin.get(f"/federations/{FID}/adapters/2")
    assert response.status_code == 200, response.text
    folder = tmp_path / "global-adapter"
    zipfile.ZipFile(io.BytesIO(response.content)).extractall(folder)

    # Stock libraries only: the base folder and the adapter folder.
    stock = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(folder))
    stock.eval()
    assert isinstance(stock, peft.PeftModelForCausalLM)
    # The project's own model: the base with FFA-LoRA at r_max, B from the global vector.
    ours = FFACausalLM(
        load_causal_lm(model_dir),
        AdapterSpec(
            num_labels=2, target_modules=TARGETS, layers_to_transform=(1,), r_max=2, alpha=spec.lora_alpha
        ),
        rank=2,
    )
    ours.load_global(vector)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = encode_pairs(tokenizer, qa.texts[:8], [qa.label_names[i] for i in qa.labels[:8]], max_length=32)
    with torch.no_grad():
        expected = stock(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        with stock.disable_adapter():
            base = stock(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(ours(batch.input_ids, batch.attention_mask), expected, atol=1e-5, rtol=0)
    assert (expected - base).abs().max() > 0  # the served adapter is not a no-op
    generated = stock.generate(input_ids=torch.tensor([batch.prompts[0]]), max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > len(batch.prompts[0])
