"""Secure aggregation's cost: the same federation with no encryption, CKKS and packed Paillier.

Every scheme runs the same model, data, strategy and seed (`SimSettings`), so the accuracies agree up to
what the encoding does to a sum (CKKS' rounding, Paillier's clipping and 16-bit quantisation) and the
differences are the crypto's: bytes per upload (the serialised ciphertext a hospital sends), the
hospitals' encryption, the edges' deserialise-and-add, the cloud's decryption of the total, and the round's
wall time. Few local steps by default: the training is the same for every scheme, the crypto is measured.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedlora.experiments.sim_report import markdown_table, plot_bars, plot_lines
from fedlora.experiments.sim_runs import SimRun, SimSettings, run_grid, write_outputs
from fedlora.simulation import DEFAULT_CLIP_NORM, simulation_clip_norm
from fedlora.specs import he_params
from protocol.crypto import generate_scheme, scheme_from_public

Scheme = Literal["none", "ckks", "paillier"]
SCHEMES: tuple[Scheme, ...] = ("none", "ckks", "paillier")
log = logging.getLogger("fedlora.experiments.secagg")


@dataclass(frozen=True)
class SecAggConfig:
    """Four hospitals behind two edges, FFA-LoRA, 3 rounds of 2 local steps.

    Every scheme's hospitals clip their deltas to `clip_norm` (the services' default norm,
    `DEFAULT_CLIP_NORM`), as every plan of the services does: packed Paillier's fixed-point range holds only
    clipped deltas, and the same clip under every scheme keeps the accuracies comparable. `clip_norm` None
    (a config.json written before the field, whose runs clipped nothing) clips no scheme but Paillier, which
    cannot run unclipped."""

    simulation: SimSettings = field(default_factory=lambda: SimSettings(steps=2))
    hospitals: int = 4
    edges: int = 2
    strategy: Literal["ffa", "fedit", "fedrot"] = "ffa"
    schemes: tuple[Scheme, ...] = SCHEMES
    clip_norm: float | None = DEFAULT_CLIP_NORM

    def __post_init__(self) -> None:
        if not 1 <= self.edges <= self.hospitals:
            raise ValueError(f"`edges` must lie in [1, hospitals={self.hospitals}], got {self.edges}")
        if not self.schemes or any(s not in SCHEMES for s in self.schemes):
            raise ValueError(f"`schemes` must be a non-empty subset of {SCHEMES}, got {self.schemes}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"`clip_norm` must be positive or None (no clip), got {self.clip_norm}")

    @classmethod
    def quick(cls) -> SecAggConfig:
        return cls(simulation=SimSettings.quick(), hospitals=2, edges=1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SecAggConfig:
        fields_ = dict(values)
        fields_["simulation"] = SimSettings.from_dict(fields_.get("simulation", {}))
        fields_["schemes"] = tuple(fields_.get("schemes", SCHEMES))
        # Written before the field: those runs clipped no scheme.
        fields_.setdefault("clip_norm", None)
        return cls(**fields_)

    def grid(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, the cell's SimulationConfig fields), one per scheme."""
        if self.clip_norm is None and "paillier" in self.schemes:
            log.warning(
                "secagg: clip_norm is None (a config written before the field, whose runs clipped nothing), "
                "but packed Paillier cannot run unclipped: its cell clips to %g, the others to nothing, so "
                "the Paillier cell does not rerun the recorded one",
                DEFAULT_CLIP_NORM,
            )
        return [
            (
                scheme,
                dict(
                    scheme=scheme,
                    hospitals=self.hospitals,
                    edges=self.edges,
                    strategy=self.strategy,
                    clip_norm=self.clip_norm
                    if self.clip_norm is not None
                    else simulation_clip_norm(None, scheme=scheme),
                ),
            )
            for scheme in self.schemes
        ]


@dataclass
class SecAggResult:
    config: SecAggConfig
    rows: list[dict[str, Any]]  # one per (scheme, round)
    summary: list[dict[str, Any]]  # one per scheme
    files: dict[str, Path]
    seconds: float


def round_rows(run: SimRun, *, hospitals: int) -> list[dict[str, Any]]:
    """One row per round of one scheme's run: per-upload bytes and the round's crypto seconds."""
    return [
        {
            "scheme": run.label,
            "round": r.round + 1,
            "accuracy": r.accuracy,
            "upload_bytes_per_client": r.upload_bytes // hospitals,
            "upload_bytes_total": r.upload_bytes,
            "encrypt_s_total": r.encrypt_s,
            "encrypt_s_per_client": r.encrypt_s / hospitals,
            "add_s": r.add_s,
            "decrypt_s": r.decrypt_s,
            "crypto_s": r.encrypt_s + r.add_s + r.decrypt_s,
            "round_s": r.seconds,
            "he_max_abs_error": r.he_max_abs_error,
            "adapter_size": run.adapter_size,
        }
        for r in run.report.rounds
    ]


def summarise(rows: Sequence[Mapping[str, Any]], *, baseline: str = "none") -> list[dict[str, Any]]:
    """Per scheme: the mean over rounds of every cost, the final accuracy, and bytes relative to
    `baseline`'s (None when the baseline did not run)."""
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    base = [r["upload_bytes_per_client"] for r in rows if r["scheme"] == baseline]
    out = []
    for scheme in schemes:
        mine = [r for r in rows if r["scheme"] == scheme]
        per_upload = mine[0]["upload_bytes_per_client"]
        out.append(
            {
                "scheme": scheme,
                "adapter_size": mine[0]["adapter_size"],
                "upload_bytes_per_client": per_upload,
                "bytes_vs_plain": per_upload / base[0] if base else None,
                "bytes_per_value": per_upload / mine[0]["adapter_size"] if mine[0]["adapter_size"] else None,
                **{
                    key: statistics.fmean(r[key] for r in mine)
                    for key in ("encrypt_s_per_client", "add_s", "decrypt_s", "crypto_s", "round_s")
                },
                "he_max_abs_error": max(r["he_max_abs_error"] for r in mine),
                "final_accuracy": mine[-1]["accuracy"],
            }
        )
    return out


def cold_encrypt(scheme: Scheme, length: int, *, seed: int, repeats: int = 3) -> dict[str, Any]:
    """One upload from a cold start, as a hospital without spare time would pay it: the data-independent
    `precompute` (Paillier's obfuscators `r^n mod n^2`; nothing for CKKS) and the encryption, each the
    median of `repeats`, and the serialised ciphertext's size. The simulation's `encrypt_s` leaves out
    `precompute`, which the agent runs while it trains."""
    params = he_params(scheme)  # what the simulation gives each scheme (every default)
    public = scheme_from_public(params, generate_scheme(params).public_bytes())
    vector = public.clip_vector(np.random.default_rng(seed).normal(scale=0.01, size=length))
    precompute, encrypt, size = [], [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        public.precompute(length)
        precompute.append(time.perf_counter() - started)
        started = time.perf_counter()
        ciphertext = public.serialize(public.encrypt(vector))
        encrypt.append(time.perf_counter() - started)
        size = len(ciphertext)
    return {
        "cold_precompute_s": statistics.median(precompute),
        "cold_encrypt_s": statistics.median(encrypt),
        "cold_ciphertext_bytes": size,
    }


def run_secagg(config: SecAggConfig, out_dir: Path) -> SecAggResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs = run_grid(config.simulation, config.grid(), out_dir)
    rows = [row for run in runs for row in round_rows(run, hospitals=config.hospitals)]
    walls = {run.label: run.wall_s for run in runs}
    summary = summarise(rows)
    for entry in summary:
        entry["run_wall_s"] = walls[entry["scheme"]]
        entry.update(cold_encrypt(entry["scheme"], entry["adapter_size"], seed=config.simulation.seed))
    result = SecAggResult(config, rows, summary, {}, time.perf_counter() - started)
    result.files = write_outputs(
        result, out_dir, experiment="secagg", runs=runs, figures=figures, markdown=results_markdown
    )
    return result


SUMMARY_COLUMNS = (
    ("scheme", "scheme"),
    ("upload_bytes_per_client", "bytes per upload"),
    ("bytes_vs_plain", "x plaintext"),
    ("bytes_per_value", "bytes per value"),
    ("encrypt_s_per_client", "encrypt s (per upload)"),
    ("cold_precompute_s", "precompute s (per upload, cold)"),
    ("add_s", "edges' add s (round)"),
    ("decrypt_s", "cloud's decrypt s (round)"),
    ("crypto_s", "crypto s (round, all parties)"),
    ("round_s", "round wall s"),
    ("he_max_abs_error", "max abs error vs plaintext sum"),
    ("final_accuracy", "final accuracy"),
    ("run_wall_s", "run wall s"),
)
ROUND_COLUMNS = (
    ("scheme", "scheme"),
    ("round", "round"),
    ("accuracy", "accuracy"),
    ("upload_bytes_per_client", "bytes per upload"),
    ("encrypt_s_total", "encrypt s (all)"),
    ("add_s", "add s"),
    ("decrypt_s", "decrypt s"),
    ("round_s", "round wall s"),
)


def figures(result: SecAggResult, out_dir: Path) -> dict[str, Path]:
    config, rows, summary = result.config, result.rows, result.summary
    files: dict[str, Path] = {}
    schemes = [s["scheme"] for s in summary]
    files["time_plot"] = plot_bars(
        schemes,
        {
            "encrypt (all hospitals)": [s["encrypt_s_per_client"] * config.hospitals for s in summary],
            "edges' add": [s["add_s"] for s in summary],
            "cloud's decrypt": [s["decrypt_s"] for s in summary],
        },
        out_dir / "crypto_seconds.png",
        title=f"crypto seconds per round, {config.hospitals} hospitals, {config.edges} edges (mean of rounds)",
        ylabel="seconds",
        stacked=True,
    )
    files["bytes_plot"] = plot_bars(
        schemes,
        {"bytes per upload": [float(s["upload_bytes_per_client"]) for s in summary]},
        out_dir / "upload_bytes.png",
        title=f"bytes per upload ({summary[0]['adapter_size']:,} adapter values)" if summary else "bytes",
        ylabel="bytes (log scale)",
        log_y=True,
    )
    files["accuracy_plot"] = plot_lines(
        {s: [(r["round"], r["accuracy"]) for r in rows if r["scheme"] == s] for s in schemes},
        out_dir / "accuracy.png",
        title="test accuracy per round (same training, different encoding of the sums)",
        xlabel="round",
        ylabel="test accuracy",
    )
    return files


def _clip_words(config: SecAggConfig) -> str:
    if config.clip_norm is not None:
        return f"L2 norm {config.clip_norm:g}"
    if "paillier" in config.schemes:
        return f"nothing (Paillier, which cannot run unclipped: L2 norm {DEFAULT_CLIP_NORM:g})"
    return "nothing"


def results_markdown(result: SecAggResult) -> str:
    config, sim = result.config, result.config.simulation
    return (
        "# Secure aggregation cost: no encryption vs CKKS vs packed Paillier\n\n"
        + markdown_table(result.summary, SUMMARY_COLUMNS, digits=4)
        + "\n## Per round\n\n"
        + markdown_table(result.rows, ROUND_COLUMNS, digits=4)
        + f"\nSame federation for every scheme: {config.hospitals} hospitals behind {config.edges} edges, "
        f"strategy {config.strategy}, {sim.rounds} round(s) of {sim.steps} local step(s) (batch "
        f"{sim.batch_size}, lr {sim.learning_rate:g}), {sim.partition} split of at most "
        f"{sim.max_train_examples:,} Rotten Tomatoes snippets, {sim.max_test_examples:,} test, sequence "
        f"{sim.max_seq_length}, rank {sim.rank}, each hospital's delta clipped to "
        f"{_clip_words(config)}, DP-SGD "
        f"{'off' if sim.epsilon is None else f'epsilon {sim.epsilon:g}'}, seed {sim.seed}, {sim.threads} "
        "thread(s). Bytes per upload is the serialised ciphertext one hospital sends (none: the plaintext "
        "envelope); encrypt is per upload, add is all edges' deserialise-and-add per round, decrypt the "
        "cloud's decryption of the total per round. The simulation's encrypt leaves out the "
        "data-independent precompute (Paillier's obfuscators, which the agent draws while it trains); the "
        "precompute column times it separately for one upload from a cold start (median of 3). The round's "
        "wall time also holds the training, the plaintext reference close and the evaluation. Timings are "
        "this machine's, shared with other jobs. "
        f"{result.seconds:.0f} s in all.\n"
    )
