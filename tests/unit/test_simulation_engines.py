"""Choosing where a simulation's hospitals run, and refusing a Ray cluster that is not there, without
starting Ray (the runs themselves: tests/e2e/test_simulation_ray.py)."""

import socket

import pytest

from fedlora.simulation_engines import RAY_FROM_HOSPITALS, RayUnreachableError, default_engine, probe


@pytest.mark.parametrize(
    ("hospitals", "address", "env", "expected"),
    [
        (4, None, None, "process"),
        (RAY_FROM_HOSPITALS, None, None, "process"),
        (RAY_FROM_HOSPITALS + 1, None, None, "ray"),
        (100, None, None, "ray"),
        (4, "10.0.0.5:6379", None, "ray"),
        (4, None, "10.0.0.5:6379", "ray"),
    ],
)
def test_the_default_engine_is_ray_above_a_few_hospitals_or_with_a_cluster(
    monkeypatch, hospitals, address, env, expected
):
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)

    assert default_engine(hospitals, ray_address=address) == expected


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("not an address", "not host:port"),
        ("10.0.0.5", "not host:port"),
        ("127.0.0.1:99999", "not host:port"),
        ("127.0.0.1:{closed}", "no answer at 127.0.0.1:"),
        ("ray://127.0.0.1:{closed}", "no answer at 127.0.0.1:"),
    ],
)
def test_an_address_nothing_answers_at_is_refused_naming_it(address, reason):
    address = address.format(closed=_closed_port())

    with pytest.raises(RayUnreachableError, match=reason) as caught:
        probe(address, timeout=2.0)

    assert caught.value.address == address and repr(address) in str(caught.value)


def test_an_address_that_answers_passes_the_probe():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        probe(f"127.0.0.1:{server.getsockname()[1]}", timeout=2.0)
