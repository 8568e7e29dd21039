"""`fedlora simulate` hands its new settings to the simulation, which refuses what the services would."""

import socket

import pytest
from typer.testing import CliRunner

from fedlora.cli import app


def _flat(text: str) -> str:
    # Rich wraps the error in a box; compare the words only.
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--strategy", "clair"], "he.kind must be 'none'"),
        (
            ["--strategy", "clair", "--scheme", "none", "--central-noise", "1", "--clip-norm", "1"],
            "noise_multiplier to 0",
        ),
        (["--central-noise", "1"], "set clip_norm too"),
        (["--scheme", "paillier", "--clip-norm", "0"], "scheme 'paillier' packs each value"),
        (["--distributed", "--clip-norm", "1"], "distributed needs noise"),
        (["--contaminated", "9"], "contaminated must lie in [0, hospitals=4]"),
        (["--strategy", "fedavg"], "strategy must be ffa, fedit, fedrot or clair"),
        (["--contamination", "swap"], "contamination must be flip or random"),
        (["--engine", "dask"], "engine must be auto, process or ray"),
        (["--engine", "process", "--workers", "2"], "need engine 'ray'"),
        (["--head-learning-rate", "-1"], "must be positive or 0, got -1"),
        (["--task", "drug_condition_qa", "--head-learning-rate", "20"], "which has no head; got 20"),
    ],
)
def test_simulate_refuses_settings_the_services_would_refuse(args, reason):
    result = CliRunner().invoke(app, ["simulate", *args])

    assert result.exit_code == 2
    assert reason in _flat(result.output)


def test_simulate_names_an_unreachable_ray_address_before_loading_anything(tmp_path):
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"

    result = CliRunner().invoke(app, ["simulate", "--ray-address", address, "--out", str(tmp_path)])

    assert result.exit_code == 2
    assert f"ray_address '{address}' is unreachable" in _flat(result.output)
    assert not any(tmp_path.iterdir())  # refused before the data, the model and the run folder


def test_simulate_refuses_masking_without_paillier():
    result = CliRunner().invoke(app, ["simulate", "--masking", "--scheme", "ckks"])
    assert result.exit_code != 0
    assert "masking needs scheme 'paillier'" in _flat(result.output)


def test_spec_validate_says_what_a_federation_without_masking_leaves_unprotected(tmp_path):
    """The default federation prints no warning; a CKKS one names both what an edge with the cloud can read
    and the key-recovery risk of publishing decryptions of crafted ciphertexts."""
    default, ckks = tmp_path / "default.yaml", tmp_path / "ckks.yaml"
    default.write_text("federation_id: d1\n")
    ckks.write_text("federation_id: c1\nhe:\n  kind: ckks\n")
    masked = CliRunner().invoke(app, ["spec", "validate", str(default)])
    unmasked = CliRunner().invoke(app, ["spec", "validate", str(ckks)])
    assert masked.exit_code == 0 and "not protected" not in masked.output
    assert "masked below it" in _flat(masked.output)
    text = _flat(unmasked.output)
    assert unmasked.exit_code == 0 and text.count("not protected:") == 2
    assert "an edge colluding with the cloud can decrypt one hospital's upload" in text
    assert "reveals its secret key" in text


def test_simulate_clips_under_paillier_unless_told_otherwise():
    """Packed Paillier's range holds only clipped deltas: unset, the clip is the services' default there and
    none elsewhere; a given clip norm is kept, 0 asks for none (which the paillier simulation then refuses)."""
    from fedlora.simulation import DEFAULT_CLIP_NORM, simulation_clip_norm

    assert DEFAULT_CLIP_NORM == 1.0
    assert simulation_clip_norm(None, scheme="paillier") == 1.0
    assert simulation_clip_norm(None, scheme="ckks") is None
    assert simulation_clip_norm(2.5, scheme="paillier") == 2.5
    assert simulation_clip_norm(0.0, scheme="ckks") is None


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_a_head_rate_given_for_a_causal_lm_is_refused_not_dropped(command, tmp_path):
    """The default rate equals the recipe's 20, so only an explicit rate can be refused: it is, by name."""
    args = [command, "--task", "drug_condition_qa", "--head-learning-rate", "20", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2
    assert "--head-learning-rate" in _flat(result.output) and "no head" in _flat(result.output)
    assert not any(tmp_path.iterdir())


def test_simulate_refuses_a_device_this_machine_lacks_before_loading_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDLORA_DEVICE", "cuda:7")
    result = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path)])

    assert result.exit_code == 2
    assert "FEDLORA_DEVICE='cuda:7' but torch sees" in _flat(result.output)
    assert not any(tmp_path.iterdir())
