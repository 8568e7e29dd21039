"""Specs whose client-level privacy the ledger cannot account are refused when they are made, naming
the fields; the new fields of the column against the decrypting cloud validate on construction."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from protocol.crypto import CKKSParams, PaillierParams
from protocol.messages import CentralDPConfig, FederationSpec

ROOMY = PaillierParams(clip=16.0, quant_bits=20)  # room for Skellam shares of z = 1


def test_prv_with_skellam_shares_under_packed_paillier_is_refused() -> None:
    dp = CentralDPConfig(noise_multiplier=1.0, distributed=True, accountant="prv")
    with pytest.raises(
        ValidationError, match=r"central_dp\.accountant 'prv'.*central_dp\.distributed.*paillier"
    ):
        FederationSpec(federation_id="f", he=ROOMY, central_dp=dp)
    # The same shares under CKKS are Gaussian, which prv accounts exactly; rdp accounts Skellam.
    FederationSpec(federation_id="f", he=CKKSParams(), central_dp=dp)
    FederationSpec(federation_id="f", he=ROOMY, central_dp=dp.model_copy(update={"accountant": "rdp"}))


def test_prv_with_laplace_noise_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"accountant 'prv'.*'laplace'"):
        CentralDPConfig(noise_multiplier=1.0, mechanism="laplace", accountant="prv")


def test_a_budget_against_the_decrypting_cloud_needs_distributed_noise() -> None:
    with pytest.raises(ValidationError, match=r"budget_against 'decrypting_cloud' needs distributed"):
        CentralDPConfig(noise_multiplier=1.0, epsilon_budget=10.0, budget_against="decrypting_cloud")
    dp = CentralDPConfig(
        noise_multiplier=1.0, epsilon_budget=10.0, budget_against="decrypting_cloud", distributed=True
    )
    assert dp.budget_against == "decrypting_cloud" and dp.colluding_clients == 0


@pytest.mark.parametrize("value", [-1, 10_001])
def test_colluding_clients_is_bounded(value: int) -> None:
    with pytest.raises(ValidationError, match="colluding_clients"):
        CentralDPConfig(noise_multiplier=1.0, distributed=True, colluding_clients=value)


def test_a_spec_written_before_the_new_fields_still_loads_with_their_defaults() -> None:
    dp = CentralDPConfig.model_validate({"noise_multiplier": 1.0, "distributed": True})
    assert dp.colluding_clients == 0 and dp.budget_against == "public"
