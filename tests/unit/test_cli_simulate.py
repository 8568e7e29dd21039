"""`fedlora simulate` hands its new settings to the simulation, which refuses what the services would."""

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
        (["--distributed", "--clip-norm", "1"], "distributed needs noise"),
        (["--contaminated", "9"], "contaminated must lie in [0, hospitals=4]"),
        (["--strategy", "fedavg"], "strategy must be ffa, fedit, fedrot or clair"),
        (["--contamination", "swap"], "contamination must be flip or random"),
    ],
)
def test_simulate_refuses_settings_the_services_would_refuse(args, reason):
    result = CliRunner().invoke(app, ["simulate", *args])

    assert result.exit_code == 2
    assert reason in _flat(result.output)
