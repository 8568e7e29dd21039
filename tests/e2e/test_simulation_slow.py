"""A whole federation in one process on the real MiniLM: encrypted aggregation equals the plaintext one."""

import json
import warnings

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedlora.simulation import SimulationConfig, simulate

pytestmark = pytest.mark.slow


def _run(tmp_path, scheme):
    config = SimulationConfig(
        hospitals=3,
        edges=2,
        partition="iid",
        rounds=1,
        steps=2,
        batch_size=32,
        max_train_examples=240,
        max_test_examples=64,
        epsilon=8.0,
        scheme=scheme,
        threads=2,
        out_dir=tmp_path / scheme,
        insecure_reproducible=True,  # both schemes draw the same noise, so only the encryption differs
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return simulate(config)


def test_ckks_round_equals_plaintext_round(tmp_path):
    ckks = _run(tmp_path, "ckks")
    plain = _run(tmp_path, "none")
    assert plain.accuracy_after == pytest.approx(ckks.accuracy_after, abs=1 / 64)
    assert [r.round for r in ckks.rounds] == [0]
    round_ = ckks.rounds[0]
    assert round_.he_max_abs_error < 1e-6
    assert {h.edge for h in round_.hospitals} == {"edge-1", "edge-2"}
    assert round_.max_epsilon == pytest.approx(8.0, rel=0.02)  # the whole budget over the one planned round
    # Same seeds, same data: the only difference is the encryption, so the adapters agree to CKKS precision.
    a = load_file(str(tmp_path / "ckks" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "none" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    moved = 0.0
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6)
        if "lora_B" in key:
            moved += float(np.abs(a[key]).sum())
    assert moved > 0  # the round did update B
    report = json.loads((tmp_path / "ckks" / "report.json").read_text())
    assert report["scheme"] == "ckks" and len(report["rounds"]) == 1
    assert (tmp_path / "ckks" / "hospitals_by_class.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
