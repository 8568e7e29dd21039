"""After `fedlora demo`, `fedlora view` serves its rounds again from the run folder's Redis.

The launcher itself runs a tiny demo (the tiny model, two hospitals on one edge, two rounds) with its cloud
on the redis-server it starts under the run folder. Once every process has stopped, the view runs as a
real process: its cloud answers with the demo's closed rounds for the saved admin token, `fedlora status`
prints them, and Ctrl-C stops the cloud and redis-server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fedlora.launcher import DemoConfig, free_port, run_demo
from services.tls import client_context
from tests.e2e.conftest import as_from_a_terminal, healthy, poll

pytestmark = pytest.mark.slow


def redis_pids(folder: Path) -> list[int]:
    """The redis-server processes working in `folder` (Redis chdirs to its `--dir`; its title hides argv)."""
    wanted = folder.resolve()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "redis-server" and (entry / "cwd").resolve() == wanted:
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedlora.cli", *args]


def test_view_serves_the_rounds_of_a_finished_demo(tmp_path, tiny_model_dir) -> None:
    out = tmp_path / "demo"
    config = DemoConfig(
        hospitals=2,
        edges=1,
        rounds=2,
        # About 120 snippets a hospital: its public count (the true one plus N(0, 10^2) from the OS) stays
        # far above its policy's smallest batch (16). With 64 in all, one run in six was refused.
        max_train_examples=240,
        max_test_examples=32,
        steps=2,
        batch_size=16,
        max_seq_length=16,
        min_clients_per_edge=2,
        model_path=tiny_model_dir,
        layers=(1,),
        timeout_s=300,
        out_dir=out,
    )
    report = asyncio.run(run_demo(config))
    assert report["federation"]["state"] == "completed"
    closed = report["rounds"]
    assert sorted((r["round"], r["state"]) for r in closed) == [(0, "closed"), (1, "closed")]
    assert redis_pids(out / "redis") == []  # the demo shut its redis-server down
    for secret in ("admin-token", "kek"):
        assert stat.S_IMODE((out / secret).stat().st_mode) == 0o600, secret

    port = free_port()
    url = f"https://127.0.0.1:{port}"  # the demo's cloud serves TLS, with the run's own CA
    ca_file = out / "tls" / "cloud" / "ca.crt"
    assert stat.S_IMODE((out / "ca" / "ca.key").stat().st_mode) == 0o600
    verify = client_context(ca_file=ca_file)
    assert verify is not None
    token = (out / "admin-token").read_text()
    admin = {"Authorization": f"Bearer {token}"}
    env = {**os.environ, "COLUMNS": "200"}
    output = tmp_path / "view.out"
    with output.open("wb") as handle:
        view = subprocess.Popen(
            cli("view", str(out), "--port", str(port)),
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=as_from_a_terminal,
        )
    try:
        poll(lambda: view.poll() is not None or healthy(url, verify), timeout_s=120, what="the view's cloud")
        assert view.poll() is None, output.read_text()
        assert len(redis_pids(out / "redis")) == 1

        # The same closed rounds as at the end of the demo: the deadline check moved nothing on.
        rounds = httpx.get(f"{url}/federations/demo/rounds", headers=admin, timeout=30, verify=verify)
        assert rounds.status_code == 200, rounds.text
        assert rounds.json() == closed
        assert httpx.get(f"{url}/federations/demo/rounds", timeout=30, verify=verify).status_code == 401
        info = httpx.get(f"{url}/federations/demo", headers=admin, timeout=30, verify=verify).json()
        assert info["state"] == "completed" and info["adapter_version"] == 2

        status = subprocess.run(
            cli("status", "--cloud", url, "--ca-file", str(ca_file), "--token", token),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert "demo: rounds" in status.stdout
        for r in closed:
            accuracy = report["accuracy_per_version"][r["adapter_version_out"]]
            row = (
                rf"│\s*{r['round']}\s*│\s*closed\s*│.*│\s*{r['adapter_version_out']}\s*│\s*{accuracy:.3f}\s*│"
            )
            assert re.search(row, status.stdout), status.stdout

        # The admin CLI reads the same rounds with the run's token file (docs/demo.md's command).
        admin_rounds = subprocess.run(
            cli(
                "admin",
                "--cloud",
                url,
                "--ca-file",
                str(ca_file),
                "--token-file",
                str(out / "admin-token"),
                "rounds",
                "-f",
                "demo",
                "--json",
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert admin_rounds.returncode == 0, admin_rounds.stderr
        assert json.loads(admin_rounds.stdout) == {"total": len(closed), "rounds": closed}

        view.send_signal(signal.SIGINT)  # Ctrl-C
        assert view.wait(timeout=60) == 0, output.read_text()
    finally:
        if view.poll() is None:
            view.send_signal(signal.SIGTERM)  # the view stops its cloud and redis-server on SIGTERM too
            view.wait(timeout=60)
        for pid in redis_pids(out / "redis"):  # only if the view left its own redis-server behind
            os.kill(pid, signal.SIGKILL)
    printed = output.read_text()
    assert f"dashboard: {url}/dashboard (admin token in {out / 'admin-token'})" in printed
    assert (
        f'fedlora status --cloud {url} --ca-file {ca_file} --token "$(cat {out / "admin-token"})"' in printed
    )
    assert redis_pids(out / "redis") == []
    assert not healthy(url, verify)
