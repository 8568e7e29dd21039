"""Recall and precision of the de-identifiers on six synthetic note sets with planted identifiers.

The sets (``tests/deid_sets.py`` puts them in one form): ``first`` (``tests/deid_notes.py``, written
alongside the rules), ``independent`` (``tests/deid_notes_independent.py``, a review's set, to which the
last fixes were partly fitted), ``held-out`` (``tests/deid_notes_heldout.py``, written before its
author read the de-identifier) and ``unseen`` (``tests/deid_notes_unseen.py``, written without reading
the de-identifier or the other sets, never used to tune it) and ``fifth``
(``tests/deid_notes_fifth.py``, written the same way and committed before it was first scored) and ``sixth``
(``tests/deid_notes_sixth.py``, likewise). An identifier counts as removed only when
every letter and digit of it lies inside a removed span (an SSN that keeps six digits is a miss); a removed span overlapping no planted
identifier is a false positive. Three finders side by side: our rules alone, Presidio's recognisers
alone, and the default (Presidio with ours). Then the spans each removes from real patient reviews (the
bundled drug_condition data), where nearly every span is over-redaction.

    PYTHONPATH=. .venv/bin/python bench/deid_eval.py [--notes 240] [--sets first,independent,held-out,unseen,fifth,sixth]
        [--seed 24] [--independent-seed 2024] [--heldout-seed 20261207] [--unseen-seed 42024]
        [--fifth-seed 520261207] [--sixth-seed 60612071] [--markdown]
        [--misses N]
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

from rich import box
from rich.console import Console
from rich.table import Table

from client_agent.deid_presidio import PresidioFinder
from client_agent.deid_rules import RuleFinder
from client_agent.phi import PHI, PHIFinder
from tests.deid_sets import SETS, TYPES, SetScore, score


def finders() -> dict[str, PHIFinder]:
    return {
        "rules": RuleFinder(),
        "Presidio": PresidioFinder(ours=False),
        "default": PresidioFinder(),
    }


def print_review_spans(console: Console, n: int, table_box: box.Box) -> None:
    """Spans removed from real patient text: drug reviews name drugs and conditions, seldom a person, so
    what a finder removes there is mostly over-redaction (the synthetic notes' filler is narrower)."""
    from client_agent.data import load_task

    texts = load_task("drug_condition").texts[:n]
    table = Table(
        title=f"Spans removed from {len(texts)} patient reviews (drug_condition): mostly over-redaction",
        box=table_box,
    )
    table.add_column("finder")
    table.add_column("spans", justify="right")
    table.add_column("reviews changed", justify="right")
    table.add_column("by placeholder")
    for name, finder in finders().items():
        counts: Counter[str] = Counter()
        changed = 0
        for text in texts:
            spans = finder.find(text)
            changed += bool(spans)
            counts.update(span.kind.value for span in spans)
        table.add_row(
            name,
            str(sum(counts.values())),
            f"{changed / len(texts):.3f}",
            ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        )
    console.print(table)


def _cell(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"


def recall_table(scores: dict[str, dict[str, SetScore]], table_box: box.Box) -> Table:
    """Rows: Safe Harbor types; per set, the identifiers planted and each finder's recall."""
    table = Table(title="Recall per Safe Harbor type", box=table_box)
    table.add_column("type")
    for set_name, by_finder in scores.items():
        table.add_column(f"{set_name} n", justify="right")
        for finder_name in by_finder:
            table.add_column(finder_name, justify="right")
    for kind in [*TYPES, None]:
        if kind and not any(next(iter(s.values())).planted[kind] for s in scores.values()):
            continue
        cells = []
        for by_finder in scores.values():
            first = next(iter(by_finder.values()))
            planted = first.planted[kind] if kind else sum(first.planted.values())
            cells.append(str(planted) if planted else "-")
            cells += [_cell(s.recall(kind)) if planted else "-" for s in by_finder.values()]
        table.add_row(kind or "all", *cells)
    return table


def precision_table(scores: dict[str, dict[str, SetScore]], table_box: box.Box) -> Table:
    """Rows: placeholders; per set and finder, the spans removed and the share on a planted identifier."""
    table = Table(
        title="Precision per placeholder (removed spans that overlap a planted identifier)", box=table_box
    )
    table.add_column("placeholder")
    for set_name, by_finder in scores.items():
        for finder_name in by_finder:
            table.add_column(f"{set_name} {finder_name}", justify="right")
    for label in [*(p.value for p in PHI), None]:
        cells = []
        for by_finder in scores.values():
            for s in by_finder.values():
                spans = s.spans[label] if label else sum(s.spans.values())
                cells.append(f"{_cell(s.precision(label))} ({spans})" if spans else "- (0)")
        table.add_row(label or "all", *cells)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=240)
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--seed", type=int, default=SETS["first"][1], help="the first set's seed")
    parser.add_argument("--independent-seed", type=int, default=SETS["independent"][1])
    parser.add_argument("--heldout-seed", type=int, default=SETS["held-out"][1])
    parser.add_argument("--unseen-seed", type=int, default=SETS["unseen"][1])
    parser.add_argument("--fifth-seed", type=int, default=SETS["fifth"][1])
    parser.add_argument("--sixth-seed", type=int, default=SETS["sixth"][1])
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument(
        "--misses", type=int, default=0, help="print this many misses of the last finder, per set"
    )
    parser.add_argument(
        "--reviews",
        type=int,
        default=400,
        help="patient reviews of drug_condition to count spans on (0: none)",
    )
    args = parser.parse_args()
    seeds = {
        "first": args.seed,
        "independent": args.independent_seed,
        "held-out": args.heldout_seed,
        "unseen": args.unseen_seed,
        "fifth": args.fifth_seed,
        "sixth": args.sixth_seed,
    }
    chosen = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SETS]
    if unknown:
        parser.error(f"--sets: unknown set {unknown[0]!r}, expected some of {', '.join(SETS)}")
    table_box = box.MARKDOWN if args.markdown else box.HEAVY_HEAD
    console = Console(width=220 if args.markdown else 160)
    built = finders()
    scores: dict[str, dict[str, SetScore]] = {}
    for set_name in chosen:
        build, _ = SETS[set_name]
        notes = build(args.notes, seeds[set_name])
        scores[set_name] = {name: score(f, notes) for name, f in built.items()}
    console.print(
        f"{args.notes} notes a set; seeds "
        + ", ".join(f"{name} {seeds[name]}" for name in chosen)
        + "; finders: rules = our rules alone (deid_engine 'rules'), Presidio = Presidio's recognisers alone, "
        "default = Presidio with ours (deid_engine 'presidio')"
    )
    console.print(recall_table(scores, table_box))
    console.print(precision_table(scores, table_box))
    for set_name, by_finder in scores.items():
        base = next(iter(by_finder.values())).seconds
        console.print(
            f"{set_name}: "
            + "; ".join(
                f"{n} {s.seconds / args.notes * 1000:.1f} ms a note ({s.seconds / base:.1f}x)"
                for n, s in by_finder.items()
            )
        )
    console.print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    if args.reviews:
        print_review_spans(console, args.reviews, table_box)
    for set_name, by_finder in scores.items():
        last = list(by_finder.values())[-1]
        for kind, value, context in last.misses[: args.misses]:
            console.print(f"{set_name} miss {kind}: {value!r} in {context!r}", markup=False)


if __name__ == "__main__":
    main()
