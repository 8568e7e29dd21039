"""The benchmarks run end to end in their quick modes (real TenSEAL, phe and gmpy2, tiny sizes)."""

from tests.bench_run import run_quick


def test_quick_bench_prints_its_tables() -> None:
    out = run_quick("he_throughput.py", timeout=120)

    assert "fedlora HE throughput" in out
    for column in ("scheme", "encrypt", "add", "decrypt", "B/param"):
        assert column in out
    for row in ("CKKS", "Paillier packed+pre", "Paillier naive", "plain float32"):
        assert row in out
    assert "target packed <= 8 B/param" in out


def test_quick_paillier_speed_prints_each_figure() -> None:
    out = run_quick("paillier_speed.py", timeout=120)

    for line in (
        "old r^n, fresh r",
        "fixed base h^a",
        "pack + multiply + serialise",
        "bytes per value",
        "offline cost of one upload's obfuscators",
        "CRT batches, 1 thread",
        "load average",
    ):
        assert line in out


def test_quick_cloud_decrypt_prints_each_figure() -> None:
    out = run_quick("cloud_decrypt.py", timeout=180)

    for line in (
        "1 thread:",
        "2 threads:" if "2 workers" in out else "threads:",
        "processes:",
        "CKKS decryption",
        "before: peak RSS",
        "streaming: peak RSS",
        "streaming / before, memory grown",
        "load average",
    ):
        assert line in out
