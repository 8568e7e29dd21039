"""The `fedlora` command line: a thin layer on top of the tiers (it is the one place that knows them all).

Every command imports what it needs inside its body, so `fedlora --help` stays fast and nothing below
this module imports upward.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.table import Table

from client_agent.recipe import HEAD_LEARNING_RATE
from fedlora.cli_admin import admin_app
from fedlora.cli_kek import kek_app
from fedlora.cli_pki import pki_app
from fedlora.cloud_access import DEFAULT_CLOUD, CaFileOption, CloudOption, TokenFileOption, TokenOption
from fedlora.status_view import privacy_tables

if TYPE_CHECKING:
    from client_agent.deid import DeidEngine
    from protocol.messages import FederationSpec

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    name="fedlora",
    help="Hierarchical secure aggregation for federated FFA-LoRA fine-tuning.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
spec_app = typer.Typer(
    help="Federation specifications: write a default one, validate one.", no_args_is_help=True
)
app.add_typer(spec_app, name="spec")
app.add_typer(admin_app, name="admin")
app.add_typer(kek_app, name="kek")
app.add_typer(pki_app, name="pki")
console = Console()


def _head_learning_rate(given: float | None, *, task: str) -> float | None:
    """The head's rate from `--head-learning-rate`: the recipe's when not given, the adapter's for 0. A
    causal LM has no head, so a rate given for one is refused rather than dropped."""
    import math

    from client_agent.data.tasks import QA_TASKS
    from protocol.messages import TrainingConfig

    if given is not None and not given >= 0:  # NaN too
        raise typer.BadParameter(f"must be positive or 0, got {given:g}", param_hint="--head-learning-rate")
    if task in QA_TASKS:
        if given:
            raise typer.BadParameter(
                f"task {task!r} fine-tunes a causal LM, which has no head; got {given:g}",
                param_hint="--head-learning-rate",
            )
        return None
    # The spec's own bound, so that the demo refuses before it starts its services, as simulate does.
    limit = next(m.le for m in TrainingConfig.model_fields["head_learning_rate"].metadata if hasattr(m, "le"))
    if given is not None and not (math.isfinite(given) and given <= limit):
        raise typer.BadParameter(
            f"must be at most {limit:g}, got {given:g}", param_hint="--head-learning-rate"
        )
    if given is None:
        return HEAD_LEARNING_RATE
    return given if given > 0 else None


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _deid_engine(value: str) -> DeidEngine:
    from client_agent.deid import DEID_ENGINES  # spaCy and Presidio load only for the commands that use them

    for engine in DEID_ENGINES:
        if value == engine:
            return engine
    raise typer.BadParameter(f"--deid-engine must be one of {', '.join(DEID_ENGINES)}, got {value!r}")


@spec_app.command("init")
def spec_init(
    federation_id: Annotated[str, typer.Argument(help="lower-case id, e.g. 'oncology-eu'")],
    out: Annotated[Path, typer.Option(help="where to write the YAML")] = Path("federation.yaml"),
) -> None:
    """Write a federation spec with the default settings, to edit and validate."""
    import yaml

    from protocol.messages import FederationSpec

    spec = FederationSpec(federation_id=federation_id)
    out.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    console.print(f"wrote {out}")


@spec_app.command("validate")
def spec_validate(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Check a federation spec (YAML or JSON) and print its summary; exit 1 naming each bad field."""
    from fedlora.specs import SpecError, load_spec

    try:
        spec = load_spec(path)
    except SpecError as e:
        for reason in e.reasons:
            console.print(f"[red]{path}: {reason}[/red]")
        raise typer.Exit(1) from e
    table = Table(title=f"federation {spec.federation_id}", show_header=False)
    table.add_row("model", spec.base_model)
    table.add_row("adapter", f"FFA-LoRA r_max={spec.r_max} on {', '.join(spec.target_modules)}")
    table.add_row("strategy", spec.strategy.value)
    masked = getattr(spec.he, "masking", False)
    table.add_row(
        "encryption", spec.he.kind.value + (", masked below it (secure aggregation)" if masked else "")
    )
    local = spec.local_dp
    table.add_row("local DP", f"epsilon {local.epsilon}, delta {local.delta}" if local.enabled else "off")
    table.add_row("central DP", _central_summary(spec))
    table.add_row("rounds", str(spec.rounds))
    table.add_row("k per edge", str(spec.min_clients_per_edge))
    console.print(table)
    for note in spec.protection():
        console.print(f"[yellow]not protected: {note}[/yellow]")


def _central_summary(spec: FederationSpec) -> str:
    """The client-level noise and what it spends over the planned rounds (the ledger's own accountant)."""
    from protocol.privacy_planning import planned_epsilon, planned_epsilons

    dp = spec.central_dp
    if not dp.noisy:
        return "off (no client-level guarantee)"
    size = 1
    if spec.he.encoding_error > 0:
        from client_agent.model import default_model_path
        from services.model_layout import federation_layout

        # What encoding adds to the sensitivity grows with the adapter's size.
        size = federation_layout(spec, default_model_path())[0].size
    where = "hospitals' shares" if dp.distributed else "cloud"
    epsilon = planned_epsilon(spec, layout_size=size)
    budget = ""
    if dp.epsilon_budget is not None:
        epsilons = planned_epsilons(spec, layout_size=size)
        affordable = next((k for k, e in enumerate(epsilons, start=1) if e > dp.epsilon_budget), None)
        stop = ""
        if affordable == 1:
            stop = ": the first round alone exceeds it, the cloud refuses this spec"
        elif affordable is not None:
            stop = f": stops with budget_exhausted after {affordable - 1} of {spec.rounds} rounds"
        against = " against the decrypting cloud" if dp.budget_against == "decrypting_cloud" else ""
        budget = f", budget {dp.epsilon_budget:g}{against}{stop}"
    return (
        f"{dp.mechanism.value} z={dp.noise_multiplier} ({dp.schedule.value}, added by the {where}), "
        f"C={dp.clip_norm}: epsilon {epsilon:.3g} after {spec.rounds} rounds at delta {dp.delta:g}"
        f"{' (late uploads counted at worst)' if spec.late_uploads is not None else ''}{budget}"
    )


@app.command("train-local")
def train_local(
    data: Annotated[
        Path | None,
        typer.Option(help="the hospital's CSV or JSONL of (text, label); default: a bundled task"),
    ] = None,
    task: Annotated[str, typer.Option(help="bundled task when --data is not given")] = "rt_sentiment",
    text_column: Annotated[str, typer.Option()] = "text",
    label_column: Annotated[str, typer.Option()] = "label",
    epsilon: Annotated[float, typer.Option(help="example-level DP target; 0 turns DP off")] = 8.0,
    delta: Annotated[float, typer.Option()] = 1e-5,
    max_grad_norm: Annotated[float, typer.Option(help="per-example clip")] = 1.0,
    rounds: Annotated[int, typer.Option(help="rounds the budget is spread over")] = 1,
    steps: Annotated[int, typer.Option(help="DP-SGD steps per round")] = 96,
    batch_size: Annotated[int, typer.Option(help="expected (Poisson) batch size")] = 492,
    learning_rate: Annotated[
        float | None, typer.Option(help="default 2.0 with DP, 0.5 without (2.0 diverges late without DP)")
    ] = None,
    max_seq_length: Annotated[int, typer.Option()] = 32,
    rank: Annotated[int, typer.Option()] = 1,
    target_modules: Annotated[str, typer.Option(help="comma-separated")] = "value",
    layers: Annotated[str, typer.Option(help="comma-separated layer indices; 'all' for every layer")] = "4,5",
    max_examples: Annotated[int | None, typer.Option(help="cap the training examples (quick checks)")] = None,
    deidentify: Annotated[bool, typer.Option(help="replace names, IDs, dates... before tokenising")] = True,
    deid_engine: Annotated[
        str, typer.Option(help="what finds PHI: 'presidio' (Presidio with our rules) or 'rules' (ours alone)")
    ] = "presidio",
    raw_text_confirmed: Annotated[
        bool,
        typer.Option(
            "--i-understand-raw-text-stays-local",
            help="required with --no-deidentify: the model trains on the raw, identifying text",
        ),
    ] = False,
    threads: Annotated[int, typer.Option()] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    report: Annotated[Path | None, typer.Option(help="write the run report as JSON here")] = None,
) -> None:
    """Train one hospital alone, as it would train in a federation, and report held-out accuracy and epsilon."""
    import logging
    import warnings

    if not deidentify:
        if not raw_text_confirmed:
            console.print(
                "[red]--no-deidentify trains on the raw text, names, IDs and dates included: add "
                "--i-understand-raw-text-stays-local to confirm[/red]"
            )
            raise typer.Exit(2)
        logging.getLogger("fedlora.train_local").warning(
            "de-identification is off: training on raw text (--no-deidentify, confirmed)"
        )

    from client_agent.data import DataError
    from client_agent.device import DeviceError
    from client_agent.local_run import LocalRunConfig, run_local

    warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
    config = LocalRunConfig(
        task=None if data is not None else task,
        data_file=data,
        text_column=text_column,
        label_column=label_column,
        epsilon=epsilon if epsilon > 0 else None,
        delta=delta,
        max_grad_norm=max_grad_norm,
        rounds=rounds,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate if learning_rate is not None else (2.0 if epsilon > 0 else 0.5),
        max_seq_length=max_seq_length,
        rank=rank,
        target_modules=_csv(target_modules),
        layers_to_transform=None if layers == "all" else tuple(int(i) for i in _csv(layers)),
        max_examples=max_examples,
        deidentify=deidentify,
        deid_engine=_deid_engine(deid_engine),
        threads=threads,
        seed=seed,
    )
    try:
        result = run_local(config)
    except (DataError, DeviceError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    table = Table(title=f"local FFA-LoRA on {result.data}")
    for column in ("round", "held-out loss", "held-out accuracy", "epsilon", "seconds"):
        table.add_column(column, justify="right")
    table.add_row("before", "", f"{result.accuracy_before:.3f}", "", "")
    for fig in result.rounds:
        eps = f"{fig.epsilon:.2f}" if fig.epsilon is not None else "no DP"
        table.add_row(str(fig.round), f"{fig.loss:.3f}", f"{fig.accuracy:.3f}", eps, f"{fig.seconds:.0f}")
    console.print(table)
    console.print(
        f"{result.train_examples} training / {result.test_examples} held-out examples; majority class "
        f"{result.majority_rate:.3f}; accuracy {result.accuracy_before:.3f} -> {result.accuracy_after:.3f}"
    )
    if result.epsilon is not None:
        console.print(
            f"DP-SGD: epsilon {result.epsilon:.3f} at delta {delta} (sigma {result.noise_multiplier:.3f}, "
            f"q {result.sample_rate:.4f}); encoding {result.seconds_encoding:.0f} s, training "
            f"{result.seconds_training:.0f} s"
        )
    if result.deid_counts:
        replaced = ", ".join(f"{k} {v}" for k, v in sorted(result.deid_counts.items()))
        console.print(f"de-identification replaced: {replaced}")
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(result.to_json())
        console.print(f"report written to {report}")


RayAddressOption = Annotated[
    str | None,
    typer.Option(
        envvar="RAY_ADDRESS", help="ray: a cluster (host:port or ray://host:port); default a local one"
    ),
]


def _run_simulation(config: object, *, title: str) -> None:
    import warnings

    from rich.live import Live
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fedlora.simulation import RoundReport, SimulationConfig, simulate
    from fedlora.simulation_engines import EngineError
    from fedlora.simulation_hospitals import HospitalRound

    assert isinstance(config, SimulationConfig)
    warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
    table = Table(title=title)
    for column in ("round", "hospital", "edge", "examples", "train acc", "epsilon", "upload MB", "s"):
        table.add_column(column, justify="right", no_wrap=True)
    rounds = Table(title="global adapter after each round (decrypted sum of the edges' sums)")
    for column in (
        "round",
        "held-out acc",
        "loss",
        "max epsilon",
        "central epsilon",
        "mismatch",
        "flagged",
        "HE max error",
        "seconds",
    ):
        rounds.add_column(column, justify="right")

    # Hospitals report as they finish (in any order under Ray): one bar across each round's hospitals.
    bar = Progress(
        TextColumn("round {task.fields[round]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )
    task = bar.add_task("hospitals", total=config.hospitals, round=0)

    def on_hospital(round_: int, row: HospitalRound) -> None:
        if bar.tasks[0].fields["round"] != round_:
            bar.reset(task, total=config.hospitals, round=round_)
        bar.advance(task)
        eps = f"{row.epsilon:.2f}" if row.epsilon is not None else "no DP"
        table.add_row(
            str(round_),
            row.hospital,
            row.edge,
            str(row.examples),
            f"{row.accuracy_local:.3f}",
            eps,
            f"{row.upload_bytes / 1e6:.2f}",
            f"{row.seconds:.0f}",
        )

    def on_round(report: RoundReport) -> None:
        eps = f"{report.max_epsilon:.2f}" if report.max_epsilon is not None else "no DP"
        central = f"{report.central_epsilon:.2f}" if report.central_epsilon is not None else "no noise"
        rounds.add_row(
            str(report.round),
            f"{report.accuracy:.3f}",
            f"{report.loss:.3f}",
            eps,
            central,
            f"{report.mismatch:.1e}",
            ", ".join(report.flagged_hospitals) or "-",
            f"{report.he_max_abs_error:.1e}",
            f"{report.seconds:.0f}",
        )

    from rich.console import Group

    console.print(f"[bold]{title}[/bold]: loading data, de-identifying, encoding with the frozen layers...")
    with Live(Group(table, rounds, bar), console=console, refresh_per_second=2):
        try:
            result = simulate(config, on_hospital=on_hospital, on_round=on_round)
        except EngineError as e:
            console.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from e
    console.print()
    console.print(
        f"held-out accuracy {result.accuracy_before:.3f} before -> {result.accuracy_after:.3f} after "
        f"{len(result.rounds)} rounds (majority class {result.majority_rate:.3f})"
    )
    console.print(f"final PEFT adapter: {result.adapter_dir}")
    console.print(f"hospital-by-class heatmap: {result.heatmap}")
    console.print(f"run report: {Path(result.adapter_dir).parent / 'report.json'}")


@app.command("simulate")
def simulate_command(
    task: Annotated[str, typer.Option()] = "rt_sentiment",
    hospitals: Annotated[int, typer.Option()] = 4,
    edges: Annotated[int, typer.Option()] = 2,
    partition: Annotated[str, typer.Option(help="iid, mild, severe or dirichlet")] = "mild",
    rounds: Annotated[int, typer.Option()] = 3,
    steps: Annotated[int, typer.Option(help="DP-SGD steps per hospital per round")] = 24,
    batch_size: Annotated[int, typer.Option()] = 256,
    learning_rate: Annotated[float, typer.Option()] = 2.0,
    head_learning_rate: Annotated[
        float | None,
        typer.Option(
            help=f"the head weight's own learning rate (default {HEAD_LEARNING_RATE:g}, lowered under DP-SGD "
            "as the noise grows); 0 = the adapter's (the recipe before issue 23); refused for a causal LM"
        ),
    ] = None,
    epsilon: Annotated[float, typer.Option(help="each hospital's example-level budget; 0 = no DP")] = 8.0,
    scheme: Annotated[str, typer.Option(help="ckks, paillier or none")] = "ckks",
    masking: Annotated[
        bool, typer.Option(help="paillier: hospitals mask their uploads below the encryption, per edge")
    ] = False,
    rank: Annotated[int, typer.Option()] = 2,
    max_train_examples: Annotated[int, typer.Option()] = 8000,
    threads: Annotated[
        int | None, typer.Option(help="torch threads (per Ray worker); default 2 in one process, 1 under Ray")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="run folder: adapter, heatmap, report")] = Path("runs/simulate"),
    strategy: Annotated[
        str, typer.Option(help="ffa, fedit, fedrot or clair (clair: --scheme none, no central noise)")
    ] = "ffa",
    central_noise: Annotated[
        float, typer.Option(help="client-level DP: z of the noise on each round's sum; 0 = off")
    ] = 0.0,
    clip_norm: Annotated[
        float | None,
        typer.Option(
            help="C: each hospital's delta is clipped to this L2 norm; 0 = no clip; default: no clip, but "
            "under --scheme paillier the services' 1.0 (its fixed-point range holds only clipped deltas)"
        ),
    ] = None,
    distributed: Annotated[
        bool, typer.Option(help="hospitals add the client-level noise in shares before encrypting")
    ] = False,
    contaminated: Annotated[int, typer.Option(help="hospitals (drawn by seed) that are contaminated")] = 0,
    contamination: Annotated[
        str, typer.Option(help="flip: train on flipped labels; random: upload Gaussian noise")
    ] = "flip",
    contamination_scale: Annotated[
        float, typer.Option(help="a contaminated upload's norm, in multiples of its benign one")
    ] = 1.0,
    insecure_reproducible: Annotated[
        bool,
        typer.Option(
            "--insecure-reproducible",
            help="draw DP noise, DP sampling and noisy counts from --seed so that a run repeats exactly; "
            "INSECURE: whoever knows the seed can subtract the noise",
        ),
    ] = False,
    deidentify: Annotated[
        bool, typer.Option(help="each hospital de-identifies its texts first, as the agent does")
    ] = True,
    engine: Annotated[
        str,
        typer.Option(
            help="where hospitals train: process (one after another here), ray (in parallel, Ray workers) "
            "or auto (ray above 16 hospitals or with a Ray address, else process)"
        ),
    ] = "auto",
    ray_address: RayAddressOption = None,
    workers: Annotated[
        int | None,
        typer.Option(help="ray: hospital workers, each with --threads CPUs; default: CPUs / threads"),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="base model folder (a causal LM for --task drug_condition_qa); default: MiniLM"),
    ] = None,
    target_modules: Annotated[
        str | None, typer.Option(help="comma-separated, e.g. q_proj,v_proj for Llama; default: value")
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(help="comma-separated layer indices, or 'all'; default: 4,5 (MiniLM's last two)"),
    ] = None,
) -> None:
    """Run a federation without HTTP (same model, DP, encryption and aggregation code as the services),
    its hospitals in this process or in parallel through Ray."""
    from client_agent.device import DeviceError, training_device
    from fedlora.simulation import SimulationConfig, SimulationError, simulation_clip_norm
    from fedlora.simulation_engines import default_engine

    try:
        training_device()  # the hospitals train where FEDLORA_DEVICE says; refused before anything loads
    except DeviceError as e:
        raise typer.BadParameter(str(e)) from e

    if partition not in ("iid", "mild", "severe", "dirichlet"):
        raise typer.BadParameter(f"partition must be iid, mild, severe or dirichlet, got {partition!r}")
    if scheme not in ("ckks", "paillier", "none"):
        raise typer.BadParameter(f"scheme must be ckks, paillier or none, got {scheme!r}")
    if strategy not in ("ffa", "fedit", "fedrot", "clair"):
        raise typer.BadParameter(f"strategy must be ffa, fedit, fedrot or clair, got {strategy!r}")
    if contamination not in ("flip", "random"):
        raise typer.BadParameter(f"contamination must be flip or random, got {contamination!r}")
    if engine not in ("auto", "process", "ray"):
        raise typer.BadParameter(f"engine must be auto, process or ray, got {engine!r}")
    chosen = default_engine(hospitals, ray_address=ray_address) if engine == "auto" else engine
    overrides: dict[str, Any] = {}  # what is not given keeps SimulationConfig's default
    if model is not None:
        overrides["model_path"] = model
    if target_modules is not None:
        overrides["target_modules"] = _csv(target_modules)
    if layers is not None:
        overrides["layers_to_transform"] = None if layers == "all" else tuple(int(i) for i in _csv(layers))
    try:
        config = SimulationConfig(
            task=task,
            hospitals=hospitals,
            edges=edges,
            partition=partition,  # type: ignore[arg-type]
            rounds=rounds,
            steps=steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            head_learning_rate=_head_learning_rate(head_learning_rate, task=task),
            epsilon=epsilon if epsilon > 0 else None,
            scheme=scheme,  # type: ignore[arg-type]
            masking=masking,
            rank=rank,
            max_train_examples=max_train_examples,
            threads=threads or (1 if chosen == "ray" else 2),
            seed=seed,
            out_dir=out,
            strategy=strategy,  # type: ignore[arg-type]
            central_noise=central_noise,
            clip_norm=simulation_clip_norm(clip_norm, scheme=scheme),
            distributed_noise=distributed,
            contaminated=contaminated,
            contamination=contamination,  # type: ignore[arg-type]
            contamination_scale=contamination_scale,
            insecure_reproducible=insecure_reproducible,
            deidentify=deidentify,
            engine=chosen,  # type: ignore[arg-type]
            ray_address=ray_address if chosen == "ray" else None,  # RAY_ADDRESS may be set for other runs
            workers=workers,
            **overrides,
        )
    except SimulationError as e:
        raise typer.BadParameter(str(e)) from e
    title = f"{hospitals} hospitals, {edges} edges, {strategy}, {scheme}, {task} ({partition}), {chosen}"
    _run_simulation(config, title=title)


@app.command("demo")
def demo(
    hospitals: Annotated[int, typer.Option()] = 4,
    edges: Annotated[int, typer.Option()] = 2,
    rounds: Annotated[int, typer.Option()] = 3,
    epsilon: Annotated[float, typer.Option(help="each hospital's example-level budget; 0 = no DP")] = 8.0,
    steps: Annotated[int, typer.Option(help="DP-SGD steps per hospital per round")] = 16,
    head_learning_rate: Annotated[
        float | None,
        typer.Option(
            help=f"the head weight's own learning rate (default {HEAD_LEARNING_RATE:g}, lowered under DP-SGD "
            "as the noise grows); 0 = the adapter's (the recipe before issue 23); refused for a causal LM"
        ),
    ] = None,
    central_noise: Annotated[
        float, typer.Option(help="client-level DP: z of the noise on each round's sum; 0 = off")
    ] = 0.25,
    distributed: Annotated[
        bool, typer.Option(help="hospitals add the client-level noise in shares before encrypting")
    ] = True,
    strategy: Annotated[
        str, typer.Option(help="ffa (A frozen, exact), fedit (A and B averaged) or fedrot (aligned first)")
    ] = "ffa",
    out: Annotated[Path, typer.Option(help="run folder: adapter, logs, report")] = Path("runs/demo"),
    task: Annotated[
        str, typer.Option(help="bundled task; drug_condition_qa fine-tunes a causal LM (--model)")
    ] = "rt_sentiment",
    partition: Annotated[
        str, typer.Option(help="mild (label skew, two classes only), severe, iid or dirichlet-ALPHA")
    ] = "mild",
    model: Annotated[
        Path | None,
        typer.Option(help="base model folder (a causal LM for drug_condition_qa); default: MiniLM"),
    ] = None,
    target_modules: Annotated[
        str, typer.Option(help="comma-separated; e.g. q_proj,v_proj for a Llama")
    ] = "value",
    layers: Annotated[str, typer.Option(help="comma-separated layer indices the adapter is on")] = "4,5",
) -> None:
    """A cloud, two edges and four hospitals as separate processes on loopback: FFA-LoRA, DP-SGD, packed
    Paillier with the uploads masked below it (secure aggregation), client-level noise added in shares by
    the hospitals, and the privacy ledger at the end."""
    import asyncio

    from rich.live import Live

    from fedlora.launcher import DemoConfig, LaunchError, RoundView, run_demo
    from protocol.messages import Strategy
    from protocol.strategies import strategy_class

    if strategy not in {s.value for s in Strategy}:
        console.print(f"[red]--strategy must be one of {[s.value for s in Strategy]}, got {strategy!r}[/red]")
        raise typer.Exit(2)

    config = DemoConfig(
        hospitals=hospitals,
        edges=edges,
        rounds=rounds,
        epsilon=epsilon,
        steps=steps,
        head_learning_rate=_head_learning_rate(head_learning_rate, task=task),
        central_noise=central_noise,
        distributed=distributed,
        strategy=Strategy(strategy),
        out_dir=out,
        task=task,
        partition=partition,
        model_path=model,
        target_modules=_csv(target_modules),
        layers=tuple(int(i) for i in _csv(layers)),
    )
    rule = strategy_class(config.strategy)
    encryption = (
        f"no encryption ({strategy.upper()} reads each region's sum)"
        if rule.requires_plaintext
        else "packed Paillier, uploads masked below it"
    )
    noise = (
        f"client-level noise z={central_noise} ({'shares added by the hospitals' if distributed else 'added by the cloud'})"
        if central_noise > 0 and rule.allows_central_noise
        else "no client-level noise"
    )
    console.print(
        f"[bold]fedlora demo[/bold]: cloud + {edges} edges + {hospitals} hospitals on loopback; "
        f"{rounds} rounds of LoRA ({strategy}) with DP-SGD (epsilon {epsilon}), {noise} and {encryption} on {task} "
        f"({config.partition} split). Logs: {out / 'logs'}"
    )
    for variable in config.hospital_opt_ins():
        console.print(
            f"[bold red]UNSAFE[/bold red]: the hospitals run with {variable}=true (their own policy refuses "
            "this federation otherwise)"
        )

    def render(views: list[RoundView], summary: dict[str, object]) -> Table:
        table = Table(
            title=f"{summary.get('phase', '')} ({summary.get('elapsed_s', 0):.0f} s)",
            caption=f"dashboard: {summary['dashboard']}" if "dashboard" in summary else None,
        )
        for column in (
            "round",
            "state",
            *[f"edge-{e + 1}" for e in range(edges)],
            "max epsilon",
            "held-out acc",
            "s",
        ):
            table.add_column(column, justify="right", no_wrap=True)
        if "accuracy_before" in summary:
            table.add_row("start", "", *[""] * edges, "", f"{summary['accuracy_before']:.3f}", "")
        for view in views:
            cells = []
            for e in range(edges):
                progress = view.edges.get(f"edge-{e + 1}")
                if progress is None:
                    cells.append("")
                else:
                    mark = " fwd" if progress.forwarded else ""
                    cells.append(f"{progress.uploads_accepted}/{progress.expected_clients}{mark}")
            table.add_row(
                str(view.round),
                view.state,
                *cells,
                f"{view.max_epsilon:.2f}" if view.max_epsilon is not None else "",
                f"{view.accuracy:.3f}" if view.accuracy is not None else "",
                f"{view.seconds:.0f}" if view.seconds is not None else "",
            )
        return table

    try:
        with Live(render([], {}), console=console, refresh_per_second=2) as live:
            report = asyncio.run(run_demo(config, on_update=lambda v, s: live.update(render(v, s))))
    except LaunchError as e:
        console.print(f"[red]demo failed: {e}[/red]")
        raise typer.Exit(1) from e
    console.print()
    console.print(
        f"held-out accuracy {report['accuracy_before']:.3f} before -> {report['accuracy_after']:.3f} after "
        f"{rounds} rounds (majority class {report['majority_rate']:.3f}) in {report['elapsed_s']:.0f} s"
    )
    from protocol.messages import PrivacyReport

    for part in privacy_tables(PrivacyReport.model_validate(report["privacy"])):
        console.print(part)
    console.print(f"final PEFT adapter: {report['adapter_dir']}")
    console.print(f"run report: {out / 'report.json'}; every process stopped")
    console.print(
        f"the rounds, the ledger and the adapters stay in {out / 'redis'}: `fedlora view {out}` serves them"
    )


@app.command("view")
def view(
    run: Annotated[Path, typer.Argument(help="a run folder written by `fedlora demo`")] = Path("runs/demo"),
    port: Annotated[int, typer.Option(min=1, max=65535, help="the cloud's port on 127.0.0.1")] = 8700,
) -> None:
    """Serve a finished demo again: its redis-server on the run's data and a cloud on it (no edge, no
    hospital), for the dashboard and `fedlora status`, until Ctrl-C."""
    import signal

    import httpx

    from fedlora.demo_run import RunFolderError
    from fedlora.demo_view import start_view
    from fedlora.launcher import LaunchError

    # SIGTERM ends the view as Ctrl-C does: the cloud and redis-server are stopped, never left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        running = start_view(run, port=port)
    except (RunFolderError, LaunchError) as e:
        console.print(f"[red]view failed: {e}[/red]")
        raise typer.Exit(1) from e
    except KeyboardInterrupt:
        console.print("stopped while starting")
        return
    token_file = running.run.admin_token_file
    try:
        console.print(
            f"[bold]fedlora view[/bold] {run}: its redis-server and a cloud on it; Ctrl-C stops both"
        )
        # soft_wrap: a line too long for the terminal still copies and pastes as one command
        console.print(f"dashboard: {running.dashboard_url} (admin token in {token_file})", soft_wrap=True)
        console.print(
            f"status:    fedlora status --cloud {running.cloud_url} --ca-file {running.run.party(None).ca_file} "
            f'--token "$(cat {token_file})"',
            soft_wrap=True,
        )
        console.print(
            f"state:     {running.run.redis_dir} ({running.redis.url}); logs in {running.run.log_dir}",
            soft_wrap=True,
        )
        try:
            active = running.still_active()
        except httpx.HTTPError as e:
            console.print(f"[yellow]could not list the federations: {e}[/yellow]")
            active = []
        for fid in active:
            console.print(
                f"[yellow]federation {fid} is still active (its demo was interrupted): the cloud closes or "
                "fails its open round once the round's deadline has passed[/yellow]"
            )
        running.serve()
    except KeyboardInterrupt:
        pass
    except LaunchError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e
    finally:
        running.stop()
    console.print(f"stopped the cloud and redis-server; the state stays in {running.run.redis_dir}")


cloud_app = typer.Typer(help="The cloud service.", no_args_is_help=True)
edge_app = typer.Typer(help="A regional edge aggregator.", no_args_is_help=True)
client_app = typer.Typer(help="A hospital's client agent.", no_args_is_help=True)
app.add_typer(cloud_app, name="cloud")
app.add_typer(edge_app, name="edge")
app.add_typer(client_app, name="client")


StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="state store: rediss://host:port/db (Redis over TLS, with FEDLORA_STORE_CA_FILE and the client "
        "certificate's FEDLORA_STORE_CERT_FILE, FEDLORA_STORE_KEY_FILE; survives restarts, shared by replicas), "
        "redis://host:port/db, or memory:// (lost at exit: refused unless FEDLORA_EPHEMERAL_STORE=1); default "
        "FEDLORA_STORE_URL",
    ),
]
PortOption = Annotated[int | None, typer.Option(help="port to listen on; default FEDLORA_PORT")]


def _override(**values: object) -> None:
    """Command-line options win over FEDLORA_* variables and the YAML file: the settings read them back."""
    for name, value in values.items():
        if value is not None:
            os.environ[f"FEDLORA_{name.upper()}"] = str(value)


@cloud_app.command("serve")
def cloud_serve(store: StoreOption = None, port: PortOption = None) -> None:
    """Run the cloud (settings from FEDLORA_* variables or the YAML file in FEDLORA_CONFIG)."""
    from cloud_server.server import run

    _override(store_url=store, port=port)
    run()


@edge_app.command("serve")
def edge_serve(store: StoreOption = None, port: PortOption = None) -> None:
    """Run an edge aggregator (settings from FEDLORA_* variables or FEDLORA_CONFIG). Replicas of one edge
    share its `--store` and key file; put them behind one load balancer."""
    from edge_aggregator.app import run

    _override(store_url=store, port=port)
    run()


@client_app.command("run")
def client_run() -> None:
    """Run a hospital's agent until the federation ends (settings from FEDLORA_* or FEDLORA_CONFIG)."""
    from client_agent.__main__ import run

    run()


@app.command("status")
def status(
    cloud: CloudOption = DEFAULT_CLOUD,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    ca_file: CaFileOption = None,
    federation: Annotated[str | None, typer.Option(help="one federation; default: all")] = None,
    watch: Annotated[
        bool,
        typer.Option("--watch", help="keep the tables on screen, read again every --interval; Ctrl-C ends"),
    ] = False,
    interval: Annotated[float, typer.Option(min=0.5, help="seconds between reads with --watch")] = 2.0,
) -> None:
    """Federations, the current round per edge, rounds (with held-out accuracy), clients and privacy, read
    from the cloud's admin API; once, or live with --watch."""
    import asyncio

    import httpx

    from fedlora.cloud_access import AccessError, CloudAccess, fail
    from fedlora.status_view import StatusError, fetch_status, status_tables

    async def once(http: httpx.AsyncClient) -> None:
        for part in status_tables(await fetch_status(http, federation=federation)):
            console.print(part)

    async def live(http: httpx.AsyncClient) -> None:
        from datetime import UTC, datetime

        from rich.console import Group
        from rich.live import Live

        shown: list[RenderableType] = []
        with Live(Group(), console=console, auto_refresh=False) as view:
            while True:
                try:
                    shown = status_tables(await fetch_status(http, federation=federation))
                    line = f"[dim]read {datetime.now(UTC):%H:%M:%S} UTC from {cloud}; every {interval:g} s; Ctrl-C ends[/dim]"
                except StatusError as e:  # keep the last tables on screen and say why they are stale
                    line = f"[red]{e}[/red] [dim](retrying every {interval:g} s; Ctrl-C ends)[/dim]"
                view.update(Group(*shown, line), refresh=True)
                await asyncio.sleep(interval)  # the refresh period, not a wait for a condition

    async def main() -> None:
        async with access.client() as http:
            await (live(http) if watch else once(http))

    try:
        access = CloudAccess.of(cloud, token=token, token_file=token_file, ca_file=ca_file)
    except AccessError as e:
        fail(e.setting, str(e), exit_code=2)

    try:
        asyncio.run(main())
    except StatusError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e
    except KeyboardInterrupt:
        console.print("stopped watching")


@app.command("experiment")
def experiment(
    name: Annotated[str | None, typer.Argument(help="an experiment's name (see --list)")] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="results folder; default runs/experiments/NAME (NAME-quick with --quick)"),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="a tiny configuration (a smoke test)")] = False,
    list_: Annotated[bool, typer.Option("--list", help="list the experiments and exit")] = False,
    engine: Annotated[
        str,
        typer.Option(help="where each federation's hospitals train: process (in turn) or ray (in parallel)"),
    ] = "process",
    ray_address: RayAddressOption = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE (repeatable): change one setting of a paper table (privacy, heterogeneity, rank, "
            "alpha); VALUE is JSON, e.g. --set 'methods=[\"ffa\"]' --set head_learning_rate=null",
        ),
    ] = None,
) -> None:
    """Run a named experiment (tables, CSV, plots, config and models in its results folder)."""
    import json

    from fedlora.experiments import (
        EXPERIMENTS,
        Engine,
        ExperimentEngineError,
        ExperimentSettingError,
        UnknownExperimentError,
        get_experiment,
        run_paper_table,
    )
    from fedlora.simulation_engines import EngineError

    if list_:
        table = Table(title="experiments")
        table.add_column("name")
        table.add_column("what it measures")
        for key, spec in sorted(EXPERIMENTS.items()):
            table.add_row(key, spec.description)
        console.print(table)
        return
    if name is None:
        console.print(f"[red]name an experiment; known: {', '.join(sorted(EXPERIMENTS))}[/red]")
        raise typer.Exit(2)
    try:
        spec = get_experiment(name)
    except UnknownExperimentError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    if engine not in ("process", "ray"):
        raise typer.BadParameter(f"engine must be process or ray, got {engine!r}")
    chosen = Engine(engine, ray_address if engine == "ray" else None)  # type: ignore[arg-type]
    settings: dict[str, Any] = {}
    for item in set_ or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"must be KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            settings[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            settings[key.strip()] = text  # a bare word: a string (e.g. partition=iid)
    import logging
    import sys

    from rich.markdown import Markdown
    from tqdm.contrib.logging import logging_redirect_tqdm

    # Plain-text lines from the experiments' loggers, for this run only, written through tqdm so they
    # never tear its progress bars (the root logger and other loggers are left as they are).
    logger = logging.getLogger("fedlora.experiments")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # Opacus configures the root logger when imported; propagating would print every line twice.
    logger.propagate = False
    # Each federation loads the encoder again; transformers' bar for that says nothing a reader waits on.
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    # A quick run never overwrites the full run's results.
    # A variant (--set) never overwrites the table's own results either.
    default = f"{name}-quick" if quick else name
    folder = (
        out if out is not None else Path("runs/experiments") / (f"{default}-set" if settings else default)
    )
    try:
        with logging_redirect_tqdm(loggers=[logger]):
            if settings:
                results = run_paper_table(name, folder, settings=settings, quick=quick, engine=chosen)
            else:
                results = spec.run(folder, quick=quick, engine=chosen)
    except (EngineError, ExperimentEngineError, ExperimentSettingError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    console.print(Markdown(results.read_text()))
    console.print(f"results in {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")


if __name__ == "__main__":
    app()
