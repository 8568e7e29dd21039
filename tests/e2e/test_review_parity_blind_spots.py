"""Review of issue 17 (fd1ccd2..main): what `tests/e2e/test_simulation_parity.py` can and cannot catch.

DEFECT (tests/e2e/test_simulation_parity.py:_through_the_services): point 5 asks for a test that runs the
same seed "through the in-process cloud/edge harness". The parity test feeds the simulation's own recorded
deltas (already through the strategy's `prepare_delta`) to `ClientAgent.make_update`, and sums the uploads
with `edge_aggregator.fold` called by the test itself. So neither the edge's `EdgeAggregator` (its checks, its
store transaction, its own call of `fold`) nor the agent's `_train` (where the agent calls the strategy's
`prepare_delta`, FedRot's alignment) ever runs, and with `rounds=1` FedRot's alignment (round 1 on) could
not be compared even if FedRot were parametrised. This test breaks both and expects the parity test to
fail; on main it passes regardless (the test below fails). At fd1ccd2 the parity test does not exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from client_agent.agent import ClientAgent
from edge_aggregator.aggregator import EdgeAggregator
from tests.e2e import test_simulation_parity as parity


def test_the_parity_test_fails_when_the_edge_s_aggregator_and_the_agent_s_strategy_hook_are_broken(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise AssertionError("the services' own code ran")

    monkeypatch.setattr(EdgeAggregator, "accept", broken)
    monkeypatch.setattr(EdgeAggregator, "_run_fold", broken)
    monkeypatch.setattr(ClientAgent, "_train", broken)

    with pytest.raises(AssertionError):
        parity.test_the_simulation_and_the_services_give_the_same_global_vector(
            tiny_model_dir,
            tmp_path,
            monkeypatch,
            "ffa",
            {"central_noise": 0.5, "distributed_noise": True},
        )
