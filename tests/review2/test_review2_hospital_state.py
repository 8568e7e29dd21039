"""Review 2: a hospital whose state.json is lost while its signing key survives starts over, and the
ledger reports the larger of the two histories instead of their composition.

docs/operations.md tells operators to keep the state folder and, to rotate a token, to edit state.json
(`"api_token": null`), so the file is edited by hand; losing it leaves `signing-key.bin`, hence the same
identity at the cloud (`enrol_client` accepts a re-enrolment with the same key and overwrites
`num_examples`). The agent then draws a second noisy count, a new split key (examples move between the
parts) and starts an empty DP-SGD history: its budget check passes again on the same data.
"""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from client_agent.errors import LocalBudgetExhaustedError
from client_agent.model import default_model_path
from client_agent.releases import COUNT_ENTRY, PublicCounts, epsilon_of
from client_agent.train import encode
from protocol.messages import LocalDPConfig, LocalSpend, TrainingConfig
from tests.cloud.harness import Federation, running_cloud, small_spec
from tests.review2.test_review2_failed_rounds import DELTA, privacy
from tests.unit.test_private_randomness import hospital, model_for, plan_for, spec

BUDGET = 2.0


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


def test_a_hospital_whose_state_json_is_lost_trains_a_second_budget_on_the_same_data(
    tmp_path, tokenizer
) -> None:
    """Spec of 2 rounds at local epsilon 2. The agent's own path (`public_count`, `_train`, the state
    saved as `run` saves it) spends the budget in two rounds; a third is refused. state.json is then lost
    (signing-key.bin kept: the same client at the cloud). The restarted agent draws another count and
    trains two more rounds: everything released about the same 40 notes composes to well above 2."""
    the_spec = spec(
        training=TrainingConfig(local_steps=4, batch_size=16, learning_rate=1.0),
        local_dp=LocalDPConfig(epsilon=BUDGET, max_grad_norm=1.0),
        rounds=2,
    )
    model = model_for(the_spec, tokenizer)
    texts, labels = [f"note {i}: stable" for i in range(40)], [i % 2 for i in range(40)]
    features = encode(model, tokenizer, texts, labels, max_length=8)
    start = np.zeros(model.layout.size, dtype=np.float32)

    def take_part(site, rounds: int) -> int:
        public = PublicCounts.derive(site.public_count(len(texts)), None)
        done = 0
        for _ in range(rounds):
            try:
                site._train(model, features, start, plan_for(the_spec), the_spec, public)
            except LocalBudgetExhaustedError:
                break
            site.state.save(site.state_path)
            done += 1
        return done

    first = hospital(tmp_path, "state")
    assert take_part(first, 3) == 2  # the budget holds: the third round is refused
    spent_before = list(first.state.privacy or [])
    identity = first.key.public_bytes

    (first.state_path).unlink()  # lost (or re-created by hand), signing-key.bin kept
    again = hospital(tmp_path, "state")
    assert again.key.public_bytes == identity  # the cloud sees the same client re-enrolling
    rounds_again = take_part(again, 3)
    total = epsilon_of([*spent_before, *(again.state.privacy or [])], delta=DELTA, accountant="rdp")

    assert rounds_again == 0 and total <= BUDGET * (1 + 1e-9), (
        f"after losing state.json the agent trained {rounds_again} more rounds on the same data: "
        f"example-level epsilon {total:.3f} against a budget of {BUDGET}"
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("new_steps", "flagged"),
    [(2000, True), (5000, False)],
    ids=["shorter-history-flagged", "longer-unrelated-history-not-even-flagged"],
)
async def test_the_ledger_reports_the_larger_history_not_their_composition(new_steps, flagged) -> None:
    """Round 0's manifest line carries a history that spent the budget (count, then 4,000 steps); round 1's
    a fresh history of the same client (count, then 2,000 steps), as the agent above sends after losing
    state.json. The ledger flags `history_regressed` and reports the larger figure; the two histories are
    two sets of releases about the same data, so the loss is at least their composition (less the count
    they share, if it were the same release). With 5,000 fresh steps the new history is not an extension of
    the old one either, but its epsilon is larger, so the ledger does not even flag it."""
    rng = np.random.default_rng(41)
    old = (COUNT_ENTRY, (0.8, 0.02, 4000))
    new = (COUNT_ENTRY, (0.8, 0.02, new_steps))
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, small_spec(rounds=3))
        await fed.start(cloud.http)
        for round_, history in ((0, old), (1, new)):
            spend = LocalSpend(epsilon=1.0, delta=DELTA, history=history)
            for edge_id, ids in (("edge-1", ("client-a", "client-b")), ("edge-2", ("client-c", "client-d"))):
                body = await fed.aggregate(
                    cloud,
                    edge_id,
                    round_,
                    {c: rng.normal(0.0, 0.01, 1538) for c in ids},
                    local_privacy={c: spend for c in ids},
                )
                assert (await fed.post(cloud.http, body)).status_code == 202
        report = await privacy(cloud, fed.fid)

    client = next(c for c in report.clients if c.client_id == "client-a")
    assert client.history_regressed is flagged
    composed = epsilon_of([*old, *new[1:]], delta=DELTA, accountant="rdp")
    assert client.local_epsilon is not None
    assert client.local_epsilon >= composed * (1 - 1e-3), (
        f"ledger local_epsilon {client.local_epsilon:.3f}; the two histories compose to {composed:.3f}"
    )
