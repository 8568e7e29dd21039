"""The simulation's hospitals in Ray workers give what they give in one process: the same global vector
after every round, the same uploads, the same DP histories; and the Ray engine's failures say what to do.

Both runs are `insecure_reproducible` (as `test_simulation_parity`): every seeded draw a hospital makes
comes from (seed, round, hospital), so the comparison is exact. The federation is packed Paillier with
masking and distributed noise: Paillier sums exactly, the masks (from the OS in both runs) cancel exactly,
so the two runs' global vectors are equal bit for bit, not just close. One Ray session (two workers on
this machine's CPUs) serves the module.
"""

from __future__ import annotations

import socket
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from fedlora.simulation import SimulationConfig, SimulationReport, simulate
from fedlora.simulation_engines import EngineError, RayNotInstalledError, RayUnreachableError
from tests.e2e.test_simulation_parity import _config as parity_config

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _config(tmp_path: Path, model_dir: Path, **overrides: object) -> SimulationConfig:
    """The parity test's federation, on packed Paillier with masking and distributed noise."""
    secure = {"scheme": "paillier", "masking": True, "central_noise": 0.5, "distributed_noise": True}
    return parity_config(tmp_path, model_dir, **(secure | overrides))


def _run(config: SimulationConfig) -> tuple[SimulationReport, list[np.ndarray], list[tuple[int, str]]]:
    vectors: list[np.ndarray] = []
    seen: list[tuple[int, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = simulate(
            config,
            on_global=lambda _, vector: vectors.append(vector),
            on_hospital=lambda round_, row: seen.append((round_, row.hospital)),
        )
    return report, vectors, seen


def test_ray_workers_give_the_one_process_global_vector_bit_for_bit(ray_session, tiny_model_dir, tmp_path):
    # Prepare: the one-process run.
    local, local_vectors, _ = _run(_config(tmp_path / "process", tiny_model_dir))

    # Execute: the same run with its hospitals on two Ray workers.
    config = _config(tmp_path / "ray", tiny_model_dir, engine="ray", workers=2)
    served, ray_vectors, seen = _run(config)

    # Assert: the same vector after every round, and every round moved it.
    assert len(ray_vectors) == len(local_vectors) == 2
    previous = np.zeros_like(local_vectors[0])
    for round_, (got, expected) in enumerate(zip(ray_vectors, local_vectors, strict=True)):
        np.testing.assert_array_equal(got, expected, err_msg=f"round {round_}")
        assert np.abs(expected - previous).max() > 0
        previous = expected
    # The same uploads, hospital by hospital; every hospital reported once a round.
    for got_round, local_round in zip(served.rounds, local.rounds, strict=True):
        assert [(r.hospital, r.edge, r.delta_norm) for r in got_round.hospitals] == [
            (r.hospital, r.edge, r.delta_norm) for r in local_round.hospitals
        ]
    assert sorted(seen) == [(r, f"hospital-{h}") for r in (0, 1) for h in "abcd"]
    assert served.config["engine"] == "ray"


@pytest.mark.slow  # Opacus' calibration; the driver keeps the histories for both engines alike
def test_ray_workers_carry_each_hospitals_dp_sgd_history_across_rounds(ray_session, tiny_model_dir, tmp_path):
    # Prepare: DP-SGD (Opacus' calibration costs seconds a hospital, so two hospitals, plaintext sums).
    plain = {"hospitals": 2, "edges": 1, "epsilon": 8.0, "scheme": "none", "masking": False}
    plain |= {"central_noise": 0.0, "distributed_noise": False}
    local, local_vectors, _ = _run(_config(tmp_path / "process", tiny_model_dir, **plain))

    # Execute: the hospitals on two workers, one each.
    served, ray_vectors, _ = _run(_config(tmp_path / "ray", tiny_model_dir, engine="ray", workers=2, **plain))

    # Assert: each hospital's epsilon grows round on round as in one process, and so do the vectors.
    epsilons = [[r.epsilon for r in round_.hospitals] for round_ in served.rounds]
    assert epsilons == [[r.epsilon for r in round_.hospitals] for round_ in local.rounds]
    assert all(later > first for first, later in zip(epsilons[0], epsilons[1], strict=True))
    for got, expected in zip(ray_vectors, local_vectors, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_an_unreachable_ray_address_is_refused_naming_it(tiny_model_dir, tmp_path):
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    config = _config(tmp_path, tiny_model_dir, engine="ray", ray_address=address)

    with pytest.raises(RayUnreachableError, match=f"ray_address '{address}' is unreachable") as caught:
        simulate(config)

    assert caught.value.address == address


def test_without_ray_installed_the_ray_engine_says_how_to_install_it(
    tiny_model_dir, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    config = _config(tmp_path, tiny_model_dir, engine="ray")

    with pytest.raises(RayNotInstalledError, match=r"pip install 'ray"):
        simulate(config)


def test_more_workers_than_the_cluster_has_cpus_for_are_refused(ray_session, tiny_model_dir, tmp_path):
    # Ray would hold the third actor until a CPU appears, which on this session's two never happens.
    config = _config(tmp_path, tiny_model_dir, engine="ray", workers=3)

    with pytest.raises(EngineError, match="workers 3 of 1 thread"):
        simulate(config)
