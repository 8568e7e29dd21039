"""The masking cost benchmark runs end to end in its quick mode (real cohort, real Paillier, tiny sizes)."""

from tests.bench_run import run_quick


def test_quick_bench_prints_its_tables_and_ratios() -> None:
    out = run_quick("secagg_cost.py")

    assert "fedlora masking cost, 3,000 adapter values" in out
    for cohort in ("n = 4", "n = 70"):  # a complete graph and a Harary graph
        assert cohort in out
    for row in ("advertise", "share", "mask", "consent + unmask", "route shares", "correction, 10% dropped"):
        assert row in out
    assert "model check: n = 4" in out
    assert "overhead of masking against today's path: hospital" in out
