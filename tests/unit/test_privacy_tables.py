"""`fedlora status` and the demo print the ledger as tables a person can read."""

from __future__ import annotations

from rich.console import Console

from fedlora.cli import privacy_tables
from protocol.messages import (
    CentralRoundPrivacy,
    ClientPrivacy,
    ClientRoundPrivacy,
    FederationState,
    NoiseMechanism,
    PrivacyReport,
)


def test_the_tables_show_both_layers_and_why_a_federation_stopped() -> None:
    report = PrivacyReport(
        federation_id="onco",
        delta=1e-5,
        central_epsilon=7.077,
        central_budget=8.0,
        next_round_epsilon=9.01,
        central_rounds=(
            CentralRoundPrivacy(
                round=0,
                mechanism=NoiseMechanism.GAUSSIAN,
                noise_multiplier=1.0,
                clip_norm=1.0,
                epsilon_after=4.5,
                realised_noise_multiplier=1.0,
                decryptor_noise_multiplier=0.707,
                clients=2,
                distributed=True,
                top_up_std=0.707,
            ),
        ),
        clients=(
            ClientPrivacy(
                client_id="hosp-a",
                local_epsilon=3.21,
                reported_epsilon=3.2,
                local_budget=8.0,
                rounds=(
                    ClientRoundPrivacy(
                        round=0, local_epsilon=3.21, noise_multiplier=0.9, sample_rate=0.04, steps=16
                    ),
                ),
            ),
        ),
        state=FederationState.BUDGET_EXHAUSTED,
        reason="the next round would bring the client-level epsilon to 9.01, above the budget 8",
    )
    console = Console(record=True, width=200)
    for part in privacy_tables(report):
        console.print(part)
    text = console.export_text()

    assert "gaussian shares" in text and "0.707" in text and "4.500" in text
    assert "hosp-a" in text and "3.210" in text and "3.200" in text
    assert "client-level epsilon 7.077 of budget 8; next round would bring it to 9.010" in text
    assert "stopped: the next round would bring the client-level epsilon to 9.01" in text


def report_with_two_columns(**overrides: object) -> PrivacyReport:
    round_ = CentralRoundPrivacy(
        round=0,
        mechanism=NoiseMechanism.GAUSSIAN,
        noise_multiplier=1.0,
        clip_norm=1.0,
        epsilon_after=4.5,
        decryptor_epsilon_after=6.25,
        realised_noise_multiplier=0.99999,
        decryptor_noise_multiplier=0.707,
        sensitivity=1.00001,
        clients=2,
        distributed=True,
        shares_planned=4,
        shares_arrived=2,
        top_up_std=0.707,
    )
    values: dict[str, object] = {
        "federation_id": "onco",
        "delta": 1e-5,
        "central_epsilon": 4.5,
        "decryptor_epsilon": 6.25,
        "decryptor_next_round_epsilon": 8.125,
        "central_budget": 7.0,
        "central_rounds": (round_,),
        "colluding_clients": 1,
        "budget_against": "decrypting_cloud",
    }
    return PrivacyReport.model_validate(values | overrides)


def shown(report: PrivacyReport) -> str:
    console = Console(record=True, width=200)
    for part in privacy_tables(report):
        console.print(part)
    return console.export_text()


def test_the_column_against_the_decrypting_cloud_is_shown_beside_the_public_one_with_the_budget_it_carries() -> (
    None
):
    text = shown(report_with_two_columns())

    assert "2/4" in text and "6.250" in text and "1.0000" in text
    assert "client-level epsilon 4.500" in text and "4.500 of budget" not in text  # it caps the other
    assert "against the decrypting cloud and 1 colluding hospitals: epsilon 6.250 of budget 7" in text
    assert "next round as planned would bring it to 8.125" in text


def test_without_distributed_noise_the_cloud_column_says_there_is_no_guarantee() -> None:
    report = report_with_two_columns(
        decryptor_epsilon=None,
        decryptor_unbounded=True,
        colluding_clients=0,
        budget_against="public",
        central_rounds=(),
    )

    text = shown(report)

    assert "client-level epsilon 4.500 of budget 7" in text
    assert "against the decrypting cloud: no client-level guarantee" in text
