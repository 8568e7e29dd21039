"""deploy/compose.yaml in containers, as `make deploy-test` runs it (deploy/deploy_test.py): the image built
from a local Debian base, the federation brought up over TLS with a Redis per tier, a clean round, then a
round in which an edge and its Redis are killed with SIGKILL after a hospital's upload was acknowledged; the
round must close with every acknowledged upload counted by the cloud.

Marked `containers` (deselected by default: pytest's addopts) and `slow`: it needs root podman and builds
an image, minutes even when cached. `.ci/run` calls `make deploy-test` where podman is installed; run this
with `pytest -m containers tests/e2e/test_compose_drill.py`. Skipped, with the reason, where podman cannot
run containers."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.containers]
ROOT = Path(__file__).resolve().parents[2]


def _compose_podman():
    spec = importlib.util.spec_from_file_location("compose_podman", ROOT / "deploy" / "compose_podman.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(3600)
def test_compose_federation_loses_no_acknowledged_upload_when_an_edge_and_its_redis_are_killed(tmp_path):
    why = _compose_podman().podman_unusable()
    if why is not None:
        pytest.skip(f"podman cannot run the compose drill here: {why}")
    built = subprocess.run([str(ROOT / "deploy" / "image.sh")], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    drill = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "deploy_test.py"), "--work", str(tmp_path / "drill")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert drill.returncode == 0, drill.stdout[-4000:] + drill.stderr[-4000:]
    rounds = re.findall(
        r"acknowledged to hospitals (\d+), counted by the cloud (\d+), lost (-?\d+)", drill.stdout
    )
    assert len(rounds) == 2, drill.stdout
    for acknowledged, counted, lost in rounds:
        assert int(acknowledged) == int(counted) == 2 and int(lost) == 0, drill.stdout
