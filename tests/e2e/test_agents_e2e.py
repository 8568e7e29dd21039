"""Four real hospital agents (`python -m client_agent`) with a cloud and two edges, all separate processes.

The one test of the whole agent loop outside `make demo`: enrol, follow the plans, train with DP-SGD on
the tiny model, align (FedRot), add the distributed noise share, encrypt, sign, upload; then the privacy
ledger is checked against accountants that share no code with fedlora.
"""

from __future__ import annotations

import csv
import math

import dp_accounting
import pytest
from opacus.accountants import RDPAccountant

from protocol.messages import (
    CentralDPConfig,
    FederationCreated,
    FederationInfo,
    FederationState,
    PrivacyReport,
    TrainingConfig,
)
from tests.e2e.conftest import CloudProcess, EdgeProcess, issue_enrolment_token, poll
from tests.e2e.helpers import FID, NOTES, make_spec

pytestmark = pytest.mark.slow
HOSPITALS = {"h-a": "edge-1", "h-b": "edge-1", "h-c": "edge-2", "h-d": "edge-2"}


def write_notes(path, n: int, seed: int) -> None:
    good, bad = "good great excellent fine recovery", "bad awful terrible poor relapse"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(n):
            writer.writerow([f"{good if (i + seed) % 2 else bad} note {i}", (i + seed) % 2])


def start_hospitals(
    cluster, tmp_path, cloud: CloudProcess, hospitals: dict[str, str], model_dir, **env: str
) -> None:
    """One agent process per hospital (client id -> edge id), each with `NOTES` notes of its own; `env` adds
    `FEDLORA_*` settings (without the prefix)."""
    for index, (client_id, edge_id) in enumerate(hospitals.items()):
        data = tmp_path / f"{client_id}.csv"
        write_notes(data, NOTES, seed=index)
        cluster.start(
            client_id,
            "client_agent",
            {
                "FEDLORA_CLIENT_ID": client_id,
                "FEDLORA_FEDERATION_ID": FID,
                "FEDLORA_EDGE_ID": edge_id,
                "FEDLORA_CLOUD_URL": cloud.url,
                "FEDLORA_ENROLMENT_TOKEN": issue_enrolment_token(cloud, FID, "client", client_id),
                "FEDLORA_STATE_DIR": str(tmp_path / "state" / client_id),
                "FEDLORA_DATA_FILE": str(data),
                "FEDLORA_MODEL_PATH": str(model_dir),
                "FEDLORA_THREADS": "1",
                "FEDLORA_POLL_S": "0.5",
            }
            | {f"FEDLORA_{name}": value for name, value in env.items()},
        )


def run_to_the_end(cloud: CloudProcess, cluster, *, enrolled: int, timeout_s: float) -> FederationInfo:
    """Once `enrolled` hospitals have enrolled, start the federation and wait until it is no longer active."""
    poll(
        lambda: len(cloud.admin.get(f"/federations/{FID}/clients").json()) == enrolled,
        timeout_s=180,
        what="the hospitals to enrol",
        cluster=cluster,
    )
    assert cloud.admin.post(f"/federations/{FID}/start").status_code == 200

    def finished() -> FederationInfo | None:
        info = FederationInfo.model_validate_json(cloud.admin.get(f"/federations/{FID}").content)
        return info if info.state is not FederationState.ACTIVE else None

    return poll(finished, timeout_s=timeout_s, what="every round", cluster=cluster, interval_s=0.5)


def test_hospital_agents_run_a_private_fedrot_federation_and_the_ledger_checks_out(
    cluster, tmp_path, tiny_model_dir
) -> None:
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir)
    spec = make_spec(
        strategy="fedrot",
        rounds=2,
        central_dp=CentralDPConfig(noise_multiplier=1.0, distributed=True, delta=1e-5),
        training=TrainingConfig(local_steps=3, batch_size=16, max_seq_length=16, learning_rate=0.5),
        round_deadline_s=240,
        upload_deadline_s=200,
    )
    response = cloud.admin.post("/federations", json=spec.model_dump(mode="json"))
    assert response.status_code == 201, response.text
    FederationCreated.model_validate_json(response.content)
    for edge_id in ("edge-1", "edge-2"):
        EdgeProcess(cluster, tmp_path, cloud, edge_id, FID)
    # A CKKS federation, for its Gaussian shares: the hospitals opt into one without masking.
    start_hospitals(
        cluster,
        tmp_path,
        cloud,
        HOSPITALS,
        tiny_model_dir,
        ALLOW_UNMASKED="true",
    )
    info = run_to_the_end(cloud, cluster, enrolled=4, timeout_s=400)
    assert info.state is FederationState.COMPLETED and info.adapter_version == 2

    report = PrivacyReport.model_validate_json(cloud.admin.get(f"/federations/{FID}/privacy").content)
    # Client-level: two rounds at z = 1, every share arrived, nothing topped up.
    assert [r.round for r in report.central_rounds] == [0, 1]
    # The sensitivity counts CKKS' encoding error, 2^-22 per coordinate of one upload (scale 2^40), in L2.
    slack = math.sqrt(info.layout_size) * 2.0**-22
    for row in report.central_rounds:
        assert row.distributed and row.clients == 4 and row.top_up_std == 0.0
        assert row.realised_noise_multiplier == pytest.approx(1.0 / (1.0 + slack), rel=1e-9)
    # Publicly, a participating hospital knows its own share (one of four): z sqrt(3 / 4) is unknown to it.
    google = dp_accounting.rdp.RdpAccountant()
    public = math.sqrt(3 / 4) / (1.0 + slack)
    google.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(public), 2))
    assert report.central_epsilon == pytest.approx(google.get_epsilon(1e-5), rel=0.01)
    # Against the cloud, edge-1's sum alone: two of the four shares.
    against_cloud = dp_accounting.rdp.RdpAccountant()
    seen = math.sqrt(2 / 4) / (1.0 + slack)
    against_cloud.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(seen), 2))
    assert report.decryptor_epsilon == pytest.approx(against_cloud.get_epsilon(1e-5), rel=0.01)
    # Example-level: each hospital's two rounds, the ledger's figure against Opacus' accountant.
    assert sorted(c.client_id for c in report.clients) == sorted(HOSPITALS)
    for client in report.clients:
        assert [r.round for r in client.rounds] == [0, 1]
        for index, row in enumerate(client.rounds, start=1):
            # The training part: the noisy count's release (std 10 examples, once), then DP-SGD rounds of 3
            # steps; no held-out part without `convergence`.
            (count, dp_sgd), sigma, rate = row.history, row.noise_multiplier, row.sample_rate
            assert count == (10.0, 1.0, 1) and dp_sgd == (sigma, rate, 3 * index) and not row.held_out_history
            opacus = RDPAccountant()
            opacus.history = [(10.0, 1.0, 1), (sigma, rate, 3 * index)]
            assert row.local_epsilon == pytest.approx(opacus.get_epsilon(delta=1e-5), rel=0.01)
            assert row.reported_epsilon == pytest.approx(row.local_epsilon, rel=0.01)
        assert client.local_epsilon == pytest.approx(8.0, rel=0.02)  # the budget, spent over both rounds
