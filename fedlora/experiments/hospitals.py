"""Seed 001's hospital scenario: five hospitals predict a patient's condition from their review, each under
DP-SGD at example-level epsilon 8, their uploads masked and encrypted (packed Paillier) in two edges.

The data is the bundled `drug_condition` task (a drugs.com review -> one of the 5 most frequent
conditions), a quarter held out as the common test set. The skew is a Dirichlet(0.5) label split
(Hsu et al. 2019) over the training pool: each condition's reviews are dealt to the hospitals in Dirichlet
proportions, so the hospitals differ both in size (about twenty to about ninety reviews) and in case mix
(one almost only birth control, like a women's clinic; others mostly pain, acne or depression), which is
how the hospitals of one region differ.

Rows, every one on the same test set, reported by macro one-vs-rest AUC, accuracy and the adapter values
the hospitals sent:

- federations at a fixed rank (`r_max`, and a low rank), every hospital alike;
- seed 001's dynamic ranks as the services implement them (`fedlora.simulation_ranks.SeedRanks`): the
  first rank from the released data size, growth from the published update's column energy, re-basing to
  a common low rank late in the run;
- the same with seed 001's own growth criterion, the variance of a hospital's uploads across rounds
  (`VarianceRanks`; the cloud cannot compute it under encryption and masking, see that module);
- the centralised model on the union (`fedlora.experiments.central`), without DP and with DP-SGD;
- each hospital alone (`fedlora.experiments.local_only`), with DP-SGD at the same budget.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from client_agent.model import FFAClassifier
from client_agent.train import DPSettings, Features
from fedlora.experiments.central import (
    CentralConfig,
    _adapter,
    _rows,
    central_batch,
    central_split,
    central_steps,
)
from fedlora.experiments.local_only import each_alone
from fedlora.experiments.sim_report import markdown_table, plot_bars, plot_lines
from fedlora.experiments.sim_runs import SimRun, SimSettings, run_simulation, write_outputs
from fedlora.simulation import SimulationConfig, prepared_run
from fedlora.simulation_ranks import RankPlanner, SeedRanks, VarianceRanks, data_size_policy
from fedlora.simulation_rounds import class_probabilities, macro_auc

log = logging.getLogger("fedlora.experiments.hospitals")

ENERGY = "dynamic ranks, energy growth"
VARIANCE = "dynamic ranks, variance growth"


def _full_settings() -> SimSettings:
    return SimSettings(
        rounds=5,
        steps=6,
        batch_size=32,
        max_train_examples=10_000,  # the whole pool: drug_condition has 360 reviews
        max_test_examples=10_000,
        max_seq_length=64,
        partition="dirichlet",
        epsilon=8.0,
        rank=8,
    )


@dataclass(frozen=True)
class HospitalsConfig:
    """The scenario. `simulation.rank` is `r_max`: the fixed-rank row at it, the dynamic rows' ceiling."""

    simulation: SimSettings = field(default_factory=_full_settings)
    task: str = "drug_condition"
    hospitals: int = 5
    edges: int = 2
    dirichlet_alpha: float = 0.5
    test_fraction: float = 0.25
    scheme: Literal["ckks", "paillier", "none"] = "paillier"
    masking: bool = True
    #: Packed Paillier's fixed-point range and bits: the head's learning rate (and DP-SGD's noise at it)
    #: moves single weights by more than the default range of 1 in a round, and a hospital refuses to upload
    #: an update outside the range. Each hospital's delta is clipped to L2 norm `he_clip` (no noise is added
    #: for it), which keeps every coordinate in range whatever the noise draws.
    he_clip: float = 64.0
    he_quant_bits: int = 28
    low_rank: int = 2  # the second fixed-rank row, and the common rank of the re-basing
    examples_for_r_max: int = 64  # data_size: a hospital with this many reviews starts at r_max
    grow_energy: float = 1.0  # `RankPolicy.grow_energy` of the energy-growth row
    rebase_after: int = 2  # the round (0-based) after which the dynamic rows re-base to `low_rank`
    seeds: tuple[int, ...] = (0,)  # one: 4 federations and the baselines fill about 20 CPU minutes here
    central_learning_rates: tuple[float, ...] = (0.5, 2.0, 8.0)

    def __post_init__(self) -> None:
        r_max = self.simulation.rank
        if not 1 <= self.low_rank <= r_max:
            raise ValueError(f"`low_rank` must lie in [1, simulation.rank={r_max}], got {self.low_rank}")
        if not 0 <= self.rebase_after < self.simulation.rounds:
            raise ValueError(
                f"`rebase_after` must lie in [0, rounds={self.simulation.rounds}), got {self.rebase_after}"
            )
        if not self.seeds:
            raise ValueError(f"`seeds` must name at least one seed, got {self.seeds}")
        if self.simulation.epsilon is None:
            raise ValueError("the scenario is DP-SGD at a budget: `simulation.epsilon` must be set, got None")

    @classmethod
    def quick(cls) -> HospitalsConfig:
        """The smoke-test size: 3 rounds of 2 steps, rank 4 at most, one seed, one central learning rate."""
        settings = replace(_full_settings(), rounds=3, steps=2, batch_size=16, max_seq_length=32, rank=4)
        return cls(simulation=settings, low_rank=1, rebase_after=1, seeds=(0,), central_learning_rates=(2.0,))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> HospitalsConfig:
        fields_ = dict(values)
        fields_["simulation"] = SimSettings.from_dict(fields_.get("simulation", {}))
        for name in ("seeds", "central_learning_rates"):
            if name in fields_:
                fields_[name] = tuple(fields_[name])
        return cls(**fields_)

    def cell(self, seed: int, **changes: Any) -> dict[str, Any]:
        """The `SimulationConfig` fields every run of `seed` shares (`changes` on top)."""
        values: dict[str, Any] = dict(
            task=self.task,
            hospitals=self.hospitals,
            edges=self.edges,
            dirichlet_alpha=self.dirichlet_alpha,
            test_fraction=self.test_fraction,
            scheme=self.scheme,
            masking=self.masking,
            he_clip=self.he_clip,
            he_quant_bits=self.he_quant_bits,
            clip_norm=self.he_clip,
            seed=seed,
        )
        values.update(changes)
        return values

    def planners(self) -> dict[str, tuple[dict[str, Any], RankPlanner | None]]:
        """Every federated row: its `SimulationConfig` changes and its rank planner (fresh: they keep state)."""
        r_max, low = self.simulation.rank, self.low_rank

        def seed_ranks(grow_energy: float | None) -> SeedRanks:
            policy = data_size_policy(examples_for_r_max=self.examples_for_r_max, grow_energy=grow_energy)
            return SeedRanks(policy, r_max=r_max, rebase_rank=low, rebase_after=self.rebase_after)

        return {
            f"fixed rank {r_max}": ({}, None),
            f"fixed rank {low}": ({"rank": low}, None),
            ENERGY: ({}, seed_ranks(self.grow_energy)),
            VARIANCE: ({}, VarianceRanks(seed_ranks(None))),
        }


@dataclass
class HospitalsResult:
    config: HospitalsConfig
    rows: list[dict[str, Any]]  # one per (seed, model, round) of every federated run
    summary: list[dict[str, Any]]  # one per model, over the seeds
    finals: list[dict[str, Any]]  # one per (seed, model)
    files: dict[str, Path]
    seconds: float
    majority: float = 0.0


def run_hospitals(config: HospitalsConfig, out_dir: Path) -> HospitalsResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs: list[SimRun] = []
    rows: list[dict[str, Any]] = []
    finals: list[dict[str, Any]] = []
    for seed in config.seeds:
        for model, (changes, planner) in config.planners().items():
            label = f"seed{seed}-{model.replace(' ', '-').replace(',', '')}"
            sim = config.simulation.simulation(out_dir / "runs" / label, **config.cell(seed, **changes))
            run = run_simulation(label, sim, ranks=planner)
            runs.append(run)
            rows.extend(round_rows(run, model=model, seed=seed))
            finals.append(federated_final(run, model=model, seed=seed))
        sim = config.simulation.simulation(out_dir / "runs" / f"seed{seed}-baselines", **config.cell(seed))
        finals.extend(central_finals(sim, learning_rates=config.central_learning_rates))
        finals.extend(alone_finals(sim))
    first = runs[0].report
    shutil.copyfile(first.heatmap, out_dir / "hospitals_by_class.png")
    result = HospitalsResult(
        config, rows, summarise(finals), finals, {}, time.perf_counter() - started, first.majority_rate
    )
    result.files = write_outputs(
        result,
        out_dir,
        experiment="hospitals",
        runs=runs,
        figures=figures,
        markdown=results_markdown,
        tables={"finals": finals},
    )
    result.files["heatmap"] = out_dir / "hospitals_by_class.png"
    return result


def round_rows(run: SimRun, *, model: str, seed: int) -> list[dict[str, Any]]:
    report = run.report
    start = {"seed": seed, "model": model, "round": 0, "accuracy": report.accuracy_before}
    start |= {"macro_auc": report.macro_auc_before, "ranks": None, "values_sent": 0, "rebased_rank": None}
    return [start] + [
        {
            "seed": seed,
            "model": model,
            "round": r.round + 1,
            "accuracy": r.accuracy,
            "macro_auc": r.macro_auc,
            "ranks": " ".join(str(r.ranks[h]) for h in sorted(r.ranks)),
            "values_sent": r.values_sent,
            "rebased_rank": r.rebased_rank,
        }
        for r in report.rounds
    ]


def federated_final(run: SimRun, *, model: str, seed: int) -> dict[str, Any]:
    report = run.report
    last = report.rounds[-1]
    return {
        "seed": seed,
        "model": model,
        "kind": "federated",
        "accuracy": report.accuracy_after,
        "macro_auc": report.macro_auc_after,
        "values_sent": sum(r.values_sent for r in report.rounds),
        "upload_bytes": sum(r.upload_bytes for r in report.rounds),
        "epsilon": last.max_epsilon,
        "ranks_first": " ".join(str(report.rounds[0].ranks[h]) for h in sorted(last.ranks)),
        "ranks_last": " ".join(str(last.ranks[h]) for h in sorted(last.ranks)),
        "hospital_sizes": " ".join(str(report.hospitals[h]) for h in sorted(report.hospitals)),
        "seconds": run.wall_s,
    }


def _scores(model: FFAClassifier, test: Features) -> tuple[float, float | None]:
    probabilities = class_probabilities(model, test)
    labels = test.labels.numpy()
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    return accuracy, macro_auc(labels, probabilities)


def _baseline(seed: int, model: str, kind: str, scores: tuple[float, float | None], **extra: Any) -> dict:
    accuracy, auc = scores
    return {"seed": seed, "model": model, "kind": kind, "accuracy": accuracy, "macro_auc": auc} | extra


def central_finals(sim: SimulationConfig, *, learning_rates: Sequence[float]) -> list[dict[str, Any]]:
    """The centralised adapter on the union of the hospitals' training data (`central`'s own training: a
    tenth held out to pick the no-DP rate, as many steps as the federation's hospitals take in all)."""
    config = CentralConfig(federation=sim, learning_rates=tuple(learning_rates))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus and transformers warn on every pass
        run = prepared_run(sim)
        fit_idx, validation_idx = central_split(run.parts, fraction=config.validation_fraction, seed=sim.seed)
        fit, validation = _rows(run.train, fit_idx), _rows(run.train, validation_idx)
        steps = central_steps(sim, run.parts, batch_size=central_batch(sim, len(fit)))
        candidates = []
        for lr in learning_rates:
            row = _adapter(
                run.model,
                run.start,
                fit,
                validation,
                run.test,
                config,
                learning_rate=lr,
                dp=None,
                steps=steps,
            )
            candidates.append((row, _scores(run.model, run.test)))
        plain, plain_scores = max(candidates, key=lambda c: c[0].validation_accuracy)
        if sim.epsilon is None:
            raise ValueError("the centralised DP row needs the federation's epsilon, got None")
        dp = DPSettings(epsilon=sim.epsilon, delta=sim.delta, max_grad_norm=sim.max_grad_norm)
        private = _adapter(
            run.model,
            run.start,
            fit,
            validation,
            run.test,
            config,
            learning_rate=sim.learning_rate,
            dp=dp,
            steps=steps,
        )
        private_scores = _scores(run.model, run.test)
    return [
        _baseline(sim.seed, "central, no DP", "central", plain_scores, values_sent=0, seconds=plain.seconds)
        | {"learning_rate": plain.learning_rate},
        _baseline(
            sim.seed, f"central, DP-SGD epsilon {dp.epsilon:g}", "central", private_scores, values_sent=0
        )
        | {"epsilon": private.epsilon, "seconds": private.seconds, "learning_rate": private.learning_rate},
    ]


def alone_finals(sim: SimulationConfig) -> list[dict[str, Any]]:
    """Each hospital trained alone with DP-SGD at the federation's budget, and their mean."""
    alone = each_alone(sim, private=True, read=lambda name, model, test: (name, _scores(model, test)))
    rows = [_baseline(sim.seed, f"{name} alone", "alone", scores, values_sent=0) for name, scores in alone]
    aucs = [r["macro_auc"] for r in rows if r["macro_auc"] is not None]
    mean = (
        statistics.fmean(r["accuracy"] for r in rows),
        statistics.fmean(aucs) if aucs else None,
    )
    return [*rows, _baseline(sim.seed, "hospitals alone, mean", "alone", mean, values_sent=0)]


def _spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    known = [v for v in values if v is not None]
    if not known:
        return None, None
    return statistics.fmean(known), statistics.stdev(known) if len(known) > 1 else 0.0


def summarise(finals: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per model over the seeds: mean and standard deviation of AUC and accuracy, mean values sent
    and that as a share of the fixed r_max federation's."""
    models = list(dict.fromkeys(r["model"] for r in finals))
    reference = next((m for m in models if m.startswith("fixed rank")), None)
    mine = {m: [r for r in finals if r["model"] == m] for m in models}
    sent = {m: statistics.fmean(r.get("values_sent", 0) for r in rows) for m, rows in mine.items()}
    out = []
    for model, rows in mine.items():
        auc, auc_sd = _spread([r["macro_auc"] for r in rows])
        accuracy, accuracy_sd = _spread([r["accuracy"] for r in rows])
        out.append(
            {
                "model": model,
                "kind": rows[0]["kind"],
                "seeds": len(rows),
                "macro_auc": auc,
                "macro_auc_sd": auc_sd,
                "accuracy": accuracy,
                "accuracy_sd": accuracy_sd,
                "values_sent": round(sent[model]),
                "sent_vs_fixed": sent[model] / sent[reference]
                if reference and sent[reference] and rows[0]["kind"] == "federated"
                else None,
            }
        )
    return out


SUMMARY_COLUMNS = (
    ("model", "model"),
    ("seeds", "seeds"),
    ("macro_auc", "macro AUC"),
    ("macro_auc_sd", "sd"),
    ("accuracy", "accuracy"),
    ("accuracy_sd", "sd"),
    ("values_sent", "values sent (all rounds)"),
    ("sent_vs_fixed", "vs fixed r_max"),
)
FINAL_COLUMNS = (
    ("seed", "seed"),
    ("model", "model"),
    ("macro_auc", "macro AUC"),
    ("accuracy", "accuracy"),
    ("values_sent", "values sent"),
    ("upload_bytes", "upload bytes"),
    ("epsilon", "epsilon"),
    ("ranks_first", "ranks, round 1"),
    ("ranks_last", "ranks, last round"),
)


def figures(result: HospitalsResult, out_dir: Path) -> dict[str, Path]:
    config, rows = result.config, result.rows
    models = list(dict.fromkeys(r["model"] for r in rows))
    rounds = range(config.simulation.rounds + 1)

    def mean_at(model: str, round_: int) -> float | None:
        return _spread([r["macro_auc"] for r in rows if r["model"] == model and r["round"] == round_])[0]

    curves: dict[str, list[tuple[float, float]]] = {}
    for model in models:
        curves[model] = [(t, v) for t in rounds if (v := mean_at(model, t)) is not None]
    for entry in result.summary:
        baseline = entry["kind"] != "federated" and not entry["model"].startswith("hospital-")
        if baseline and entry["macro_auc"] is not None:
            curves[entry["model"]] = [(t, entry["macro_auc"]) for t in rounds]
    named = [e for e in result.summary if not e["model"].startswith("hospital-")]
    return {
        "auc": plot_lines(
            curves,
            out_dir / "auc_per_round.png",
            title=f"macro one-vs-rest AUC on {config.task}, mean of {len(config.seeds)} seed(s)",
            xlabel="round (0: the starting adapter; flat lines: the baselines' final AUC)",
            ylabel="macro AUC (one-vs-rest)",
        ),
        "summary": plot_bars(
            [e["model"].replace(", ", "\n") for e in named],
            {"macro AUC": [e["macro_auc"] or 0.0 for e in named], "accuracy": [e["accuracy"] for e in named]},
            out_dir / "summary.png",
            title="final test figures, mean over seeds",
            ylabel="test set",
        ),
    }


def results_markdown(result: HospitalsResult) -> str:
    config, sim = result.config, result.config.simulation
    rebase = config.rebase_after + 1
    layers = ", ".join(str(i) for i in sim.layers_to_transform or SimulationConfig.layers_to_transform or ())
    return (
        "# Seed 001's hospitals: dynamic ranks under DP, against the centralised model and each hospital alone\n\n"
        + markdown_table(result.summary, SUMMARY_COLUMNS)
        + f"\n`{config.task}` (a review -> one of the 5 most frequent conditions), {config.test_fraction:.0%} "
        f"held out as the test set (majority class {result.majority:.3f}); the rest split over "
        f"{config.hospitals} hospitals by Dirichlet({config.dirichlet_alpha:g}) label proportions, so they "
        f"differ in size and case mix (`hospitals_by_class.png`, seed {config.seeds[0]}). Each federation: "
        f"{sim.rounds} rounds of {sim.steps} DP-SGD steps (epsilon {sim.epsilon:g} per hospital over the "
        f"run, delta {SimulationConfig.delta:g}), expected batch "
        f"{sim.batch_size} (at most the hospital's size), lr {sim.learning_rate:g} (head "
        f"{sim.head_learning_rate or sim.learning_rate:g}, at most: lowered as the DP noise grows), sequences of {sim.max_seq_length} tokens, FFA-LoRA on "
        f"`value` of layers {layers}, {config.scheme}{' with pairwise masking' if config.masking else ''} "
        f"over {config.edges} edges (k = 2; {config.he_quant_bits}-bit fixed point in [-{config.he_clip:g}, "
        f"{config.he_clip:g}], each hospital's delta clipped to L2 norm {config.he_clip:g} to stay in it). Fixed rows: every hospital at that rank. Dynamic rows: r_max "
        f"{sim.rank}; the first rank from the hospital's released (noisy) example count (`data_size`, "
        f"{config.examples_for_r_max} reviews give r_max); growth by the published update's column energy "
        f"(threshold {config.grow_energy:g}) or by the variance of the hospital's own uploads (at most the "
        f"median doubles); after round {rebase} the adapter is re-based by SVD to rank {config.low_rank} "
        "and everyone trains at it. A hospital uploads only the columns at least k = 2 hospitals reach "
        "(`planned_hold`). 'values sent': adapter values the hospitals trained and uploaded, all rounds; "
        "on the wire each upload is padded to the federation's r_max, so the bytes follow r_max, not the "
        "rank. The centralised rows train the same adapter on the union (nine tenths; a tenth picks the "
        f"no-DP rate among {', '.join(f'{lr:g}' for lr in config.central_learning_rates)}) for as many "
        "steps as the federation's hospitals take; the alone rows train each hospital's share for the "
        f"same rounds and steps with DP-SGD at epsilon {sim.epsilon:g}. INSECURE reproducibility: every DP "
        f"draw comes from the seed. {result.seconds:.0f} s in all.\n\n"
        "The variance criterion is not something the cloud can compute here: each upload is masked and "
        "encrypted, an edge forwards only sums of at least k hospitals and the cloud decrypts only the "
        "global sum, so no party but the hospital holds one hospital's update. The variance row uses each "
        "hospital's own uploads, as if each hospital computed its figure and reported it: no extra "
        "example-level privacy (a function of DP-SGD outputs), but one number per hospital per round "
        "outside the secure sum, which the services do not release.\n\n"
        "## Every run\n\n" + markdown_table(result.finals, FINAL_COLUMNS)
    )
