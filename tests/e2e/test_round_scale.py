"""The round-scale benchmark (`bench/round_scale.py`) at its quickest configuration, as `make round-scale
ROUND_SCALE_ARGS=--quick` runs it: for each scheme, a real cloud, 4 real edges and a real `redis-server` as
processes, 10 hospitals enrolled with enrolment tokens, their updates encrypted under the federation's key,
signed and uploaded over HTTP, one round closed.

Properties: every scheme's round closes with every hospital in it; the published mean is the mean of the
vectors the hospitals sent, within each scheme's encoding error; each secure round has its ratio to the
plaintext round of the same size; the bytes per value are what each encoding packs (plaintext: a float64;
packed Paillier at 16 bits with 4 bits of headroom for 10 hospitals: 20-bit slots, 102 to a 512-byte
ciphertext). The expected values are worked out here from the parameters, not read from the bench.

Slow: three worlds of six processes each start in turn, over a minute on two shared cores; no fast test
covers the bench, and the services' round itself is covered by the fast e2e tests (`test_services_e2e.py`).
"""

from __future__ import annotations

import json

import pytest

from tests.bench_run import run_bench

pytestmark = pytest.mark.slow

HOSPITALS = 10
PAILLIER_SLOTS = 2047 // (16 + 4)  # key_bits - 1 over quant_bits + ceil(log2(10 hospitals))
PAILLIER_STEP = 1.0 / (2**15 - 1)  # clip 1.0 over 2^(quant_bits - 1) - 1


@pytest.mark.timeout(900)
def test_quick_round_closes_under_every_scheme_with_the_mean_sent(tmp_path):
    # Prepare / Execute: the quick configuration, every scheme.
    figures = tmp_path / "figures.json"
    result = run_bench(
        "round_scale.py", "--quick", f"--json={figures}", f"--keep={tmp_path / 'run'}", timeout=840
    )
    print(result.stdout)
    assert figures.exists(), result.stderr[-4000:]
    runs = {run["scheme"]: run for run in json.loads(figures.read_text())}

    # Assert: each round closed with every hospital acknowledged and counted.
    assert set(runs) == {"none", "paillier", "paillier-auto", "ckks"}
    for run in runs.values():
        assert run["round_state"] == "closed", run
        assert run["acknowledged"] == run["clients_contributed"] == HOSPITALS, run
        assert run["refused"] == {}, run
        assert len(run["uploads_per_s_per_edge"]) == len(run["edge_peak_rss_mb"]) == 4, run
        assert min(run["edge_peak_rss_mb"]) > 0 and run["cloud_peak_rss_mb"] > 0, run
    # The published mean is the mean sent: float32 rounding for plaintext and CKKS, half a quantisation
    # step (and float32) for Paillier.
    assert runs["none"]["max_abs_error"] < 1e-6
    assert runs["ckks"]["max_abs_error"] < 1e-6
    assert runs["paillier"]["max_abs_error"] <= PAILLIER_STEP / 2 + 1e-6
    # Ratios to the plaintext round, and what each encoding costs a value.
    assert runs["none"]["wall_vs_plain"] == 1.0
    assert runs["paillier"]["wall_vs_plain"] > 0 and runs["ckks"]["wall_vs_plain"] > 0
    assert 8.0 <= runs["none"]["ciphertext_bytes_per_value"] < 8.1
    values = runs["paillier"]["values"]
    packed = -(-values // PAILLIER_SLOTS) * 512 / values
    assert packed <= runs["paillier"]["ciphertext_bytes_per_value"] < packed * 1.02
    # Only the Paillier hospital has an offline part (its obfuscators), and the cloud decrypts under it.
    assert runs["paillier"]["hospital_offline_s"] > 0 and runs["none"]["hospital_offline_s"] == 0
    assert runs["paillier"]["cloud_decrypt_s"] > 0
    # Compression: the cloud plans fewer bits than 16 for its noise, so more values share a ciphertext and an
    # upload is smaller; the published mean carries the cloud's noise, so its error is not checked here.
    assert runs["paillier-auto"]["quant_bits"] < runs["paillier"]["quant_bits"] == 16
    auto_bytes = runs["paillier-auto"]["ciphertext_bytes_per_value"]
    assert auto_bytes < runs["paillier"]["ciphertext_bytes_per_value"]
    assert result.returncode == 0, result.stderr[-4000:]
