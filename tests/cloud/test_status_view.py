"""`fedlora status` (once and `--watch`) draws the same tables from a snapshot of a real in-process cloud."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
from rich.console import Console

from fedlora.status_view import FederationStatus, StatusError, fetch_status, rounds_table, status_tables
from protocol import examples
from protocol.messages import CentralDPConfig, FederationInfo, RoundStatus
from tests.cloud.harness import Federation, running_cloud, small_spec

pytestmark = pytest.mark.anyio


def text_of(parts: list[object]) -> str:
    console = Console(record=True, width=240)
    for part in parts:
        console.print(part)
    return console.export_text()


def row_of(text: str, *cells: str) -> str:
    """The one table line holding every cell, in order (cells are separated by box characters)."""
    rows = [line for line in text.splitlines() if all(f" {c} " in line for c in cells)]
    assert len(rows) == 1, (cells, rows)
    return rows[0]


async def test_the_tables_show_progress_accuracy_validation_loss_and_epsilon() -> None:
    rng = np.random.default_rng(11)
    spec = small_spec(rounds=3, central_dp=CentralDPConfig(noise_multiplier=1.0))
    async with running_cloud() as cloud:
        fed = await Federation.create(cloud.http, spec)
        await fed.start(cloud.http)
        # Round 0: both edges; validation losses whose example-weighted mean is (60+240+50+50)/600.
        validation = {
            "client-a": (0.6, 100),
            "client-b": (0.8, 300),
            "client-c": (0.5, 100),
            "client-d": (0.5, 100),
        }
        deltas = fed.deltas(rng)
        for edge_id in ("edge-1", "edge-2"):
            body = await fed.aggregate(cloud, edge_id, 0, deltas[edge_id], validation=validation)
            assert (await fed.post(cloud.http, body)).status_code == 202
        # Round 1: only edge-1 so far.
        deltas = fed.deltas(rng)
        assert (
            await fed.post(cloud.http, await fed.aggregate(cloud, "edge-1", 1, deltas["edge-1"]))
        ).status_code == 202
        evaluation = {"metrics": {"accuracy": 0.75, "loss": 0.5}, "examples": 200, "dataset": "rt:test"}
        assert (
            await cloud.http.put(f"/federations/{fed.fid}/adapters/1/evaluation", json=evaluation)
        ).is_success

        snapshot = await fetch_status(cloud.http)
        text = text_of(status_tables(snapshot))

    # One Gaussian round at z = 1, by Google's accountant (independent of the cloud's ledger).
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(1.0))
    epsilon = accountant.get_epsilon(1e-5)
    assert row_of(text, "fed-1", "active", "1", "1", "ffa")
    assert "fed-1: round 1 (collecting) per edge" in text
    assert row_of(text, "edge-1", "2/2", "0", "yes")
    assert row_of(text, "edge-2", "0/2", "0", "no", "0")
    # Round 0 made adapter version 1: its accuracy, and the hospitals' validation loss.
    assert row_of(text, "0", "closed", "4", "1", "0.750", f"{400 / 600:.4f}")
    assert row_of(text, "1", "collecting", "2")
    assert f"client-level epsilon {epsilon:.3f}" in text
    assert row_of(text, "client-a", "edge-1", "2", "100", "1")


async def test_one_federation_or_a_clear_error() -> None:
    async with running_cloud() as cloud:
        await Federation.create(cloud.http, small_spec("fed-1"))
        await Federation.create(cloud.http, small_spec("fed-2"))

        one = await fetch_status(cloud.http, federation="fed-2")
        with pytest.raises(StatusError, match="no federation 'nope'"):
            await fetch_status(cloud.http, federation="nope")
        cloud.http.headers["Authorization"] = "Bearer not-the-admin-token"
        with pytest.raises(StatusError, match="401"):
            await fetch_status(cloud.http)

    assert [f.spec.federation_id for f in one.federations] == ["fed-1", "fed-2"]
    assert [d.info.spec.federation_id for d in one.details] == ["fed-2"]
    assert "fed-2: no round yet" in text_of(status_tables(one))


def test_a_round_s_dropped_uploads_show_in_its_row() -> None:
    """A failed round whose aggregates held four uploads says so beside its failure."""
    failed = RoundStatus.model_validate(
        {
            **examples.ROUND_STATUS_CLOSED,
            "state": "failed",
            "failure": "not decrypted",
            "uploads_dropped": {"round_failed": 4},
        }
    )
    snapshot = FederationStatus(
        info=FederationInfo.model_validate(examples.FEDERATION_INFO),
        rounds=(failed,),
        clients=(),
        versions=(),
        privacy=None,
    )

    text = text_of([rounds_table(snapshot)])

    assert "not decrypted; 4 dropped: round_failed" in text
