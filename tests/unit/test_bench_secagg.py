"""The masking cost benchmark runs end to end in its quick mode (real cohort, real Paillier, tiny sizes)."""

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "secagg_cost.py"


def test_quick_bench_prints_its_tables_and_ratios() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "fedlora masking cost, 3,000 adapter values" in result.stdout
    for cohort in ("n = 4", "n = 70"):  # a complete graph and a Harary graph
        assert cohort in result.stdout
    for row in ("advertise", "share", "mask", "consent + unmask", "route shares", "correction, 10% dropped"):
        assert row in result.stdout
    assert "model check: n = 4" in result.stdout
    assert "overhead of masking against today's path: hospital" in result.stdout
