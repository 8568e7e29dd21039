"""The hospital side against its own data and what the network sends it (issue 20, item 6): a data error names
the file, line, field and reason but never a value read from the file (raw patient text, not yet
de-identified), and the agent logs it as one JSON line and exits 2 without a traceback; a basis with a
non-finite value is refused, as is a plan with a non-finite field, and a non-finite trained delta skips the round before encryption; the state holding the API token and the signing key are created 0600; k is at
least 2 in every spec; `train-local --no-deidentify` needs an explicit confirmation and is logged."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from client_agent.agent import labelled_for, load_hospital_data
from client_agent.data import DataError, load_file
from client_agent.errors import AgentError, PlanRefusedError
from client_agent.update import contribution
from fedlora.cli import app
from protocol.crypto import PaillierParams, generate_scheme
from protocol.ffa import AdapterLayout, LayoutError, basis_bytes, basis_from_bytes, seeded_bases
from protocol.messages import FederationSpec, RoundPlan
from tests.hospitals import ENROLMENT_TOKEN, hospital_agent, hospital_settings
from tests.unit.test_agent_policy import policy
from tests.unit.test_agent_update import plan

SECRET = "Jane Roe MRN 4471"  # what must never leave the file through an error message
ROOT = Path(__file__).resolve().parents[2]
PLAN = plan()  # round 3 of onco, clip_norm 0.5


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "line", "field"),
    [
        ("label.csv", f"text,label\nfine,pos\nok,{SECRET}\n", 3, "label"),
        ("json.jsonl", f'{{"text": "a", "label": "pos"}}\n{{"text": "{SECRET}", "label": \n', 2, None),
        ("array.jsonl", f'["{SECRET}"]\n', 1, None),
        ("nested.jsonl", f'{{"text": ["{SECRET}"], "label": "pos"}}\n', 1, "text"),
    ],
)
def test_a_data_error_names_path_line_and_field_never_a_value(
    tmp_path: Path, name: str, content: str, line: int, field: str | None
) -> None:
    path = write(tmp_path / name, content)

    with pytest.raises(DataError) as info:
        load_file(path, label_names=["pos", "neg"])

    error = info.value
    assert (error.path, error.line, error.field) == (str(path), line, field)
    assert SECRET not in str(error) and "Jane" not in repr(error)
    assert not hasattr(error, "value")
    assert error.facts() == {"path": str(path), "line": line, "field": field, "reason": error.reason}


def test_a_bad_byte_is_located_by_offset_not_shown(tmp_path: Path) -> None:
    path = write(tmp_path / "latin1.csv", b"text,label\nfine,1\ncaf\xe9 au lait,1\n")

    with pytest.raises(DataError, match="not valid UTF-8") as info:
        load_file(path)

    assert info.value.line == 3
    assert "xe9" not in str(info.value) and "caf" not in str(info.value)


def test_a_label_the_federation_lacks_is_counted_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", f"text,label\nnote one,yes\nnote two,{SECRET}\n")
    settings = hospital_settings(tmp_path, data_file=path)
    spec = FederationSpec(federation_id="onco", num_labels=2, label_names=("no", "yes"))

    with pytest.raises(AgentError, match="1 labels that federation 'onco' does not have") as info:
        labelled_for(load_hospital_data(settings), spec)

    assert SECRET not in str(info.value)


def test_the_agent_logs_a_data_error_as_one_json_line_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.csv", f"text,label\n{SECRET},1\n{SECRET} again,\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FEDLORA_CLIENT_ID": "hosp-a",
        "FEDLORA_FEDERATION_ID": "onco",
        "FEDLORA_EDGE_ID": "edge-1",
        "FEDLORA_CLOUD_URL": "http://127.0.0.1:1",
        "FEDLORA_ENROLMENT_TOKEN": ENROLMENT_TOKEN,
        "FEDLORA_STATE_DIR": str(tmp_path / "state"),
        "FEDLORA_DATA_FILE": str(path),
        "FEDLORA_LOG_JSON": "true",
    }

    done = subprocess.run(
        [sys.executable, "-m", "client_agent"], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )

    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out and SECRET not in out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{") and "data_error" in line]
    assert len(lines) == 1, out
    entry = lines[0]
    assert (entry["level"], entry["code"], entry["msg"]) == ("error", "data_error", "data error")
    assert (entry["path"], entry["line"], entry["field"], entry["reason"]) == (
        str(path),
        3,
        "label",
        "empty label",
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_basis_with_a_non_finite_value_is_refused(bad: float) -> None:
    layout = AdapterLayout.build(lora_out_features={"m.0": 3, "m.1": 3}, r_max=2)
    in_features = {"m.0": 4, "m.1": 4}
    bases = seeded_bases(layout, in_features, seed=1, basis_version=0)
    raw = bytearray(basis_bytes(layout, bases))
    raw[8:12] = np.array([bad], dtype="<f4").tobytes()

    with pytest.raises(LayoutError, match="basis: 1 of its 16 values are not finite"):
        basis_from_bytes(bytes(raw), layout, in_features)
    with pytest.raises(LayoutError, match="not a whole number"):
        basis_from_bytes(bytes(raw)[:-1], layout, in_features)


def test_state_and_signing_key_are_created_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        agent = hospital_agent(tmp_path)
        agent.state.api_token = "api-token-secret"
        agent.state.save(agent.state_path)
    finally:
        os.umask(old)

    assert agent.state_path.stat().st_mode & 0o777 == 0o600
    assert (agent.state_dir / "signing-key.bin").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in agent.state_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_k_is_at_least_2_in_every_spec_and_shipped_file() -> None:
    with pytest.raises(ValidationError, match="min_clients_per_edge"):
        FederationSpec(federation_id="f", min_clients_per_edge=1)
    shipped = yaml.safe_load((ROOT / "deploy" / "federation.yaml").read_text())
    assert shipped["min_clients_per_edge"] >= 2
    FederationSpec.model_validate(shipped)


def test_train_local_without_deidentification_needs_a_confirmation_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = str(tmp_path / "missing.csv")  # the run stops at loading: no model, no training

    refused = CliRunner().invoke(app, ["train-local", "--data", missing, "--no-deidentify"])
    assert refused.exit_code == 2
    assert "--i-understand-raw-text-stays-local" in refused.output
    assert "cannot read file" not in refused.output  # refused before the data is read

    with caplog.at_level(logging.WARNING, logger="fedlora.train_local"):
        confirmed = CliRunner().invoke(
            app, ["train-local", "--data", missing, "--no-deidentify", "--i-understand-raw-text-stays-local"]
        )
    assert confirmed.exit_code == 2 and "cannot read file" in confirmed.output
    assert any("de-identification is off" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_delta_skips_the_round_instead_of_reaching_the_encryption(bad: float) -> None:
    scheme = generate_scheme(PaillierParams(clip=1.0))
    delta = np.array([0.1, bad, -0.2])

    with pytest.raises(PlanRefusedError, match="1 non-finite values") as info:
        contribution(scheme, delta, weight=1.0, clip_norm=0.5)

    assert (info.value.field, info.value.value) == ("delta", "1 non-finite")


def test_a_plan_field_that_is_not_finite_is_refused_naming_it() -> None:
    """JSON's `Infinity` in a plan's `clip_norm` (bounded below only) is refused when the plan is parsed,
    naming the field (every model refuses non-finite floats, issue 20); a plan that holds one anyway (built
    without validation) is refused by the hospital before training, naming the field: an infinite clip norm
    clips nothing."""
    wire = PLAN.model_dump_json()
    assert '"clip_norm":0.5' in wire
    with pytest.raises(ValidationError) as parsed:
        RoundPlan.model_validate_json(wire.replace('"clip_norm":0.5', '"clip_norm":Infinity'))
    assert parsed.value.errors()[0]["loc"] == ("clip_norm",)
    hostile = PLAN.model_copy(update={"clip_norm": float("inf")})
    hospital = policy()
    hospital.check_plan(PLAN, client_id="hosp-a", num_examples=400)

    with pytest.raises(PlanRefusedError) as info:
        hospital.check_plan(hostile, client_id="hosp-a", num_examples=400)

    assert (info.value.field, info.value.value) == ("clip_norm", float("inf"))
    assert "clip_norm = inf is not finite" in str(info.value)
