"""Runs a bench script in a subprocess, as `make bench` would run it."""

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_bench(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`bench/<script> args...` run to its end (one thread per process, as the benches report), whatever
    its exit status: a test reads its figures before it looks at the status."""
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )


def run_quick(script: str, *, timeout: float = 180) -> str:
    """The stdout of `bench/<script> --quick`; fails the test with stderr when the script fails."""
    result = run_bench(script, "--quick", timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout
