"""The HE benchmark runs end to end in its quick mode (real TenSEAL and phe, tiny sizes)."""

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "he_throughput.py"


def test_quick_bench_prints_its_tables() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "fedlora HE throughput" in result.stdout
    for column in ("scheme", "encrypt", "add", "decrypt", "B/param"):
        assert column in result.stdout
    for row in ("CKKS", "Paillier packed+pre", "Paillier naive", "plain float32"):
        assert row in result.stdout
    assert "target packed <= 8 B/param" in result.stdout
