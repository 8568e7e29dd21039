"""The HE benchmark runs end to end in its quick mode (real TenSEAL and phe, tiny sizes)."""

from tests.bench_run import run_quick


def test_quick_bench_prints_its_tables() -> None:
    out = run_quick("he_throughput.py", timeout=120)

    assert "fedlora HE throughput" in out
    for column in ("scheme", "encrypt", "add", "decrypt", "B/param"):
        assert column in out
    for row in ("CKKS", "Paillier packed+pre", "Paillier naive", "plain float32"):
        assert row in out
    assert "target packed <= 8 B/param" in out
