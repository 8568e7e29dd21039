"""The composition root's one spec builder: flat run settings and spec files through the spec's validator."""

from pathlib import Path

import pytest

from fedlora.specs import SpecError, federation_spec, load_spec
from protocol.crypto.params import HEKind
from protocol.messages import FederationSpec, Strategy


def test_flat_names_land_in_their_sections_and_the_rest_keeps_the_defaults() -> None:
    # Execute
    spec = federation_spec(
        federation_id="flat",
        rank=4,
        alpha=16.0,
        scheme="paillier",
        epsilon=3.0,
        max_grad_norm=0.5,
        central_noise=1.2,
        clip_norm=0.1,
        distributed=True,
        steps=7,
        max_seq_length=48,
        strategy="fedit",
    )

    # Assert
    defaults = FederationSpec(federation_id="flat")
    assert (spec.r_max, spec.lora_alpha, spec.he.kind, spec.strategy) == (
        4,
        16.0,
        HEKind.PAILLIER,
        Strategy.FEDIT,
    )
    assert (spec.local_dp.enabled, spec.local_dp.epsilon, spec.local_dp.max_grad_norm) == (True, 3.0, 0.5)
    assert spec.local_dp.delta == defaults.local_dp.delta
    assert (spec.central_dp.noise_multiplier, spec.central_dp.clip_norm, spec.central_dp.distributed) == (
        1.2,
        0.1,
        True,
    )
    assert (spec.training.local_steps, spec.training.max_seq_length) == (7, 48)
    assert spec.training.batch_size == defaults.training.batch_size
    assert spec.rounds == defaults.rounds


def test_dp_sgd_off_by_no_epsilon_or_by_the_switch() -> None:
    # Execute
    no_epsilon = federation_spec(federation_id="no-dp", epsilon=None, clip_norm=None)
    switched_off = federation_spec(federation_id="no-dp", epsilon=0.001, dp_sgd=False)

    # Assert
    defaults = FederationSpec(federation_id="no-dp")
    assert (no_epsilon.local_dp.enabled, no_epsilon.local_dp.epsilon) == (False, defaults.local_dp.epsilon)
    assert no_epsilon.central_dp.clip_norm == defaults.central_dp.clip_norm
    assert (switched_off.local_dp.enabled, switched_off.local_dp.epsilon) == (False, 0.001)


def test_what_the_spec_refuses_is_named_field_by_field() -> None:
    with pytest.raises(SpecError, match=r"he\.kind must be 'none'") as clair:
        federation_spec(federation_id="robust", strategy="clair", scheme="ckks")
    with pytest.raises(SpecError) as too_much:
        federation_spec(federation_id="greedy", epsilon=500.0, rank=0)

    assert "Value error" not in str(clair.value)
    assert sorted(reason.split(":")[0] for reason in too_much.value.reasons) == ["local_dp.epsilon", "r_max"]


def test_a_spec_file_is_read_or_refused_with_its_path(tmp_path: Path) -> None:
    # Prepare
    good, bad, broken = tmp_path / "good.yaml", tmp_path / "bad.yaml", tmp_path / "broken.yaml"
    good.write_text("federation_id: from-file\nr_max: 4\n")
    bad.write_text("federation_id: from-file\nr_max: 0\n")
    broken.write_text("federation_id: [unclosed\n")

    # Execute / Assert
    assert load_spec(good).r_max == 4
    with pytest.raises(SpecError, match=r"bad\.yaml: r_max: ") as refused:
        load_spec(bad)
    assert refused.value.source == bad
    with pytest.raises(SpecError, match="not YAML or JSON"):
        load_spec(broken)
    with pytest.raises(SpecError, match="cannot read the spec file"):
        load_spec(tmp_path / "missing.yaml")
