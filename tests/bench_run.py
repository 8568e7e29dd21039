"""Runs a bench script's quick mode in a subprocess, as `make bench` would run the full one."""

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_quick(script: str, *, timeout: float = 180) -> str:
    """The stdout of `bench/<script> --quick`; fails the test with stderr when the script fails."""
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
