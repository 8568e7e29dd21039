"""`fedlora experiment hospitals` on the tiny model: every row on the same test set, the ranks each
federation trained at, and the values its hospitals sent, counted by hand from the layout."""

import csv
import json

import pytest

from fedlora.experiments.hospitals import ENERGY, VARIANCE, HospitalsConfig, run_hospitals
from fedlora.experiments.sim_runs import SimSettings

HIDDEN = 32  # the tiny BERT's width: `value` of layer 1 has 32 output rows
HEAD = HIDDEN * 5 + 5  # 5 conditions
HOSPITALS = 5


@pytest.fixture(scope="module")
def hospitals(tiny_model_dir, tmp_path_factory):
    settings = SimSettings(
        rounds=3,
        steps=2,
        batch_size=16,
        max_train_examples=10_000,
        max_test_examples=10_000,
        max_seq_length=16,
        partition="dirichlet",
        epsilon=8.0,
        rank=4,
        threads=1,
        deidentify=False,
        model_path=str(tiny_model_dir),
        layers_to_transform=(1,),
    )
    config = HospitalsConfig(
        simulation=settings, low_rank=1, rebase_after=1, seeds=(0,), central_learning_rates=(2.0,)
    )
    out = tmp_path_factory.mktemp("hospitals")
    return config, run_hospitals(config, out), out


def _values(rank):
    return HIDDEN * rank + HEAD


def test_every_row_on_the_same_test_set(hospitals):
    _, result, _ = hospitals
    models = [row["model"] for row in result.summary]
    assert models == [
        "fixed rank 4",
        "fixed rank 1",
        ENERGY,
        VARIANCE,
        "central, no DP",
        "central, DP-SGD epsilon 8",
        *(f"hospital-{h} alone" for h in "abcde"),
        "hospitals alone, mean",
    ]
    for row in result.finals:
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["macro_auc"] is None or 0.0 <= row["macro_auc"] <= 1.0
    central_dp = next(r for r in result.finals if r["model"] == "central, DP-SGD epsilon 8")
    assert central_dp["epsilon"] == pytest.approx(8.0, rel=1e-3)
    for row in result.finals:
        if row["kind"] == "federated":
            assert row["epsilon"] <= 8.0 + 1e-6


def test_fixed_ranks_send_rank_columns_and_the_head(hospitals):
    config, result, _ = hospitals
    rounds = config.simulation.rounds
    sent = {r["model"]: r["values_sent"] for r in result.finals if r["kind"] == "federated"}
    assert sent["fixed rank 4"] == HOSPITALS * rounds * _values(4)
    assert sent["fixed rank 1"] == HOSPITALS * rounds * _values(1)
    fixed = next(r for r in result.summary if r["model"] == "fixed rank 1")
    assert fixed["sent_vs_fixed"] == pytest.approx(_values(1) / _values(4))


@pytest.mark.parametrize("model", [ENERGY, VARIANCE])
def test_dynamic_ranks_start_from_data_re_base_and_send_what_k_hospitals_reach(hospitals, model):
    config, result, _ = hospitals
    rows = [r for r in result.rows if r["model"] == model and r["round"] > 0]
    assert len(rows) == config.simulation.rounds
    for row in rows:
        ranks = [int(r) for r in row["ranks"].split()]
        assert len(ranks) == HOSPITALS and set(ranks) <= {1, 2, 4}
        # Columns at least k = 2 hospitals reach: below the second largest rank.
        published = sorted(ranks, reverse=True)[1]
        assert row["values_sent"] == sum(_values(min(r, published)) for r in ranks)
    # Re-based after round `rebase_after` (0-based): every later round trains at the low rank.
    rebase_round = config.rebase_after + 1
    assert [r["rebased_rank"] for r in rows] == [
        config.low_rank if r["round"] == rebase_round else None for r in rows
    ]
    assert all(r["ranks"] == " ".join(["1"] * HOSPITALS) for r in rows if r["round"] > rebase_round)


def test_outputs_are_where_the_experiments_write(hospitals):
    config, result, out = hospitals
    for name in ("results.md", "results.csv", "summary.csv", "finals.csv", "config.json"):
        assert (out / name).is_file(), name
    for name in ("auc_per_round.png", "summary.png", "hospitals_by_class.png"):
        assert (out / name).stat().st_size > 0, name
    written = json.loads((out / "config.json").read_text())
    assert HospitalsConfig.from_dict(written["config"]) == config
    with (out / "finals.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(result.finals)
    text = (out / "results.md").read_text()
    # The variance criterion's visibility is stated.
    assert "macro AUC" in text and "not something the cloud can compute" in text
