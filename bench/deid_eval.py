"""Recall and precision of the de-identifiers on synthetic clinical notes with planted identifiers.

The notes come from ``tests/deid_notes.py`` (many note styles, names of many origins, every identifier
recorded with its span and HIPAA Safe Harbor type). An identifier counts as removed only when every
letter and digit of it lies inside a removed span (an SSN that keeps six digits is a miss); a removed
span overlapping no planted identifier is a false positive. Three finders side by side: our rules alone,
Presidio's recognisers alone, and the default (Presidio with ours). Then the spans each removes from real
patient reviews (the bundled drug_condition data), where nearly every span is over-redaction.

    PYTHONPATH=. .venv/bin/python bench/deid_eval.py [--notes 240] [--seed 24]
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

from rich.console import Console
from rich.table import Table

from client_agent.deid_presidio import PresidioFinder
from client_agent.deid_rules import RuleFinder
from client_agent.phi import PHIFinder
from tests.deid_notes import SafeHarbor, evaluate, generate_notes


def finders() -> dict[str, PHIFinder]:
    return {
        "our rules": RuleFinder(),
        "Presidio alone": PresidioFinder(ours=False),
        "Presidio + ours": PresidioFinder(),
    }


def print_review_spans(console: Console, n: int) -> None:
    """Spans removed from real patient text: drug reviews name drugs and conditions, seldom a person, so
    what a finder removes there is mostly over-redaction (the synthetic notes' filler is narrower)."""
    from client_agent.data import load_task

    texts = load_task("drug_condition").texts[:n]
    table = Table(
        title=f"Spans removed from {len(texts)} patient reviews (drug_condition): mostly over-redaction"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", type=int, default=240)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--misses", type=int, default=0, help="print this many misses of the last finder")
    parser.add_argument(
        "--reviews",
        type=int,
        default=400,
        help="patient reviews of drug_condition to count spans on (0: none)",
    )
    args = parser.parse_args()
    notes = generate_notes(args.notes, seed=args.seed)
    scores = {name: evaluate(finder, notes) for name, finder in finders().items()}
    names = list(scores)
    console = Console(width=140)
    planted = sum(len(n.planted) for n in notes)
    table = Table(
        title=f"Recall per Safe Harbor type: {len(notes)} notes, {planted} identifiers, seed {args.seed}"
    )
    table.add_column("type")
    table.add_column("planted", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for kind in SafeHarbor:
        first = scores[names[0]]
        if first.planted[kind]:
            table.add_row(
                kind.value, str(first.planted[kind]), *(f"{scores[n].recall(kind):.3f}" for n in names)
            )
    table.add_row("all", str(planted), *(f"{scores[n].overall_recall():.3f}" for n in names))
    console.print(table)
    labels = sorted({label for s in scores.values() for label in s.spans})
    ptable = Table(title="Precision per placeholder type (spans removed that overlap a planted identifier)")
    ptable.add_column("placeholder")
    for name in names:
        ptable.add_column(f"{name}: spans", justify="right")
        ptable.add_column("precision", justify="right")
    for label in labels:
        cells = []
        for n in names:
            cells += [str(scores[n].spans[label]), f"{scores[n].precision(label):.3f}"]
        ptable.add_row(label, *cells)
    total = []
    for n in names:
        total += [str(sum(scores[n].spans.values())), f"{scores[n].precision():.3f}"]
    ptable.add_row("all", *total)
    console.print(ptable)
    base = scores[names[0]].seconds
    for n in names:
        console.print(
            f"{n}: {scores[n].seconds / len(notes) * 1000:.1f} ms a note ({scores[n].seconds / base:.1f}x our rules)"
        )
    console.print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    if args.reviews:
        print_review_spans(console, args.reviews)
    for kind, value, context in scores[names[-1]].misses[: args.misses]:
        console.print(f"miss {kind}: {value!r} in {context!r}", markup=False)


if __name__ == "__main__":
    main()
