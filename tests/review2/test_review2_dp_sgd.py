"""Review 2: the hand-wired Opacus path (`client_agent.train._dp_steps`) against an empty Poisson batch.

`_run_steps` says: "A Poisson batch may be empty; it is still a DP step (noise only), so it runs and is
counted." With Poisson sampling at `q = 1 / ceil(n_pub / batch)` over the *true* examples, a batch is empty
with probability (1 - q)^n each step, and n_pub is n plus N(0, 10^2): a hospital of 16 notes whose count
came out at 60 samples at q = 1/4, an empty batch 1% of steps. Opacus' DPDataLoader then hands over
zero-size tensors and the BERT layers fail to reshape them: training raises, the agent dies mid-round (no
upload; the steps already taken are not in the history, which is appended after `_dp_steps`), and whether
it does depends on the exact count.

What held (checked while writing this, same tiny model, sigma = 0, sample rate 1): one example moves the
summed clipped gradient by exactly max_grad_norm (head and B clipped jointly), and the noise on the averaged
gradient is sigma * max_grad_norm / expected_batch.
"""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from client_agent.model import default_model_path
from client_agent.releases import PublicCounts
from client_agent.train import encode
from protocol.messages import LocalDPConfig, TrainingConfig
from tests.unit.test_private_randomness import hospital, model_for, plan_for, spec


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


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
