"""Masking below the encryption with every party a real process: a cloud, two edges and five hospital
agents (`python -m client_agent`) in a packed-Paillier masking federation, one planned hospital absent.

Each agent joins its edge's cohort before training (adverts, roster, sealed shares, inbox), uploads its
masked, encrypted update, then signs the survivor list and answers the unmask request; each edge forwards
its survivors' sum with the mask correction; the cloud unmasks the total and publishes. Hospital h-x is
enrolled and planned at edge-1 but never runs: edge-1's roster closes without it at the stage timeout, and
the round completes from the four hospitals that did.
"""

from __future__ import annotations

import numpy as np
import pytest

from protocol.crypto import PaillierParams
from protocol.messages import (
    FederationCreated,
    FederationState,
    RoundStatus,
    TrainingConfig,
)
from tests.e2e.conftest import CloudProcess, EdgeProcess, poll
from tests.e2e.helpers import FID, adapter_vector, enrol, make_spec
from tests.e2e.test_agents_e2e import run_to_the_end, start_hospitals

pytestmark = pytest.mark.slow
HOSPITALS = {"h-a": "edge-1", "h-b": "edge-1", "h-c": "edge-2", "h-d": "edge-2", "h-e": "edge-2"}


def test_hospital_agents_run_a_masking_federation_with_one_planned_hospital_absent(
    cluster, tmp_path, tiny_model_dir
) -> None:
    cloud = CloudProcess(cluster, tmp_path, tiny_model_dir)
    spec = make_spec(
        rounds=2,
        he=PaillierParams(masking=True),
        training=TrainingConfig(local_steps=2, batch_size=16, max_seq_length=16, learning_rate=0.5),
        round_deadline_s=240,
        upload_deadline_s=180,
    )
    response = cloud.admin.post("/federations", json=spec.model_dump(mode="json"))
    assert response.status_code == 201, response.text
    FederationCreated.model_validate_json(response.content)
    edges = {}
    for edge_id in ("edge-1", "edge-2"):
        edges[edge_id] = EdgeProcess(
            cluster,
            tmp_path,
            cloud,
            edge_id,
            FID,
            env={"FEDLORA_MASKING_STAGE_S": "4"},
        )
    poll(
        lambda: len(cloud.admin.get(f"/federations/{FID}/edges").json()) == 2,
        timeout_s=60,
        what="the edges to enrol",
        cluster=cluster,
    )
    enrol(cloud, "h-x", "edge-1")  # planned, never runs
    start_hospitals(cluster, tmp_path, cloud, HOSPITALS, tiny_model_dir)
    info = run_to_the_end(cloud, cluster, enrolled=6, timeout_s=500)
    assert info.state is FederationState.COMPLETED and info.adapter_version == 2
    for round_ in (0, 1):
        status = RoundStatus.model_validate_json(
            cloud.admin.get(f"/federations/{FID}/rounds/{round_}").content
        )
        assert status.clients_contributed == 5 and not status.flagged, status
    vector = adapter_vector(cloud, 2)
    assert np.all(np.isfinite(vector)) and np.any(vector != 0)
    # Every hospital took part in both rounds' cohorts to the end; edge-1 never waited past the stage
    # timeout for h-x, and no cohort failed.
    for client_id in HOSPITALS:
        log = (tmp_path / "logs" / f"{client_id}.log").read_text()
        assert log.count("answered the edge's unmask request") == 2, client_id
    edge_logs = {edge_id: edge.log_lines() for edge_id, edge in edges.items()}
    assert not any("masking cohort failed" in line for lines in edge_logs.values() for line in lines)
    closed = [line for line in edge_logs["edge-1"] if "masking adverts closed" in line]
    assert len(closed) == 2 and all('"received": 2, "waited_for": 3, "timed_out": true' in c for c in closed)
