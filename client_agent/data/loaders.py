"""Load a hospital's own labelled texts from CSV/TSV or JSON Lines, validating every row.

Every problem raises :class:`DataError` naming the file, the 1-based physical line, the field and the
reason (never a value: a row is raw patient text), and nothing is returned until the whole file is valid: a half-loaded file is never trained on.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from client_agent.data.dataset import Dataset
from client_agent.data.errors import DataError

_BOM = b"\xef\xbb\xbf"
_INTEGER = re.compile(r"-?\d+")
FileFormat = Literal["csv", "tsv", "jsonl"]
_FORMATS: dict[str, FileFormat] = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class _Row:
    line: int
    text: str
    label: str
    meta: dict[str, str]


def load_file(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    meta_columns: Sequence[str] = (),
    name: str | None = None,
    file_format: FileFormat | None = None,
) -> Dataset:
    """Load ``path`` as CSV, TSV or JSON Lines: ``file_format``, or else guessed from the suffix
    (``.csv``, ``.tsv``, ``.jsonl``, ``.ndjson``).

    ``label_names`` fixes the classes and their order (label ``i`` is ``label_names[i]``); a row whose
    label is not among them is an error. Without it the classes are the distinct labels found, sorted
    numerically when they are all integers and alphabetically otherwise. ``meta_columns`` are carried
    into ``Dataset.meta`` (a ward or department to partition by, say).
    """
    path = Path(path)
    fmt = file_format or _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"unknown file type; name one of csv, tsv, jsonl or use a suffix in {sorted(_FORMATS)}", path=path
        )
    text = _decode(path)
    columns = (text_column, label_column, *meta_columns)
    if fmt == "jsonl":
        rows = list(_jsonl_rows(text, path=path, columns=columns))
    else:
        rows = list(_csv_rows(text, path=path, columns=columns, delimiter="\t" if fmt == "tsv" else ","))
    return _build(rows, path=path, columns=columns, label_names=label_names, name=name or path.stem)


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read file: {e.strerror}", path=path) from e
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"not valid UTF-8 (at byte offset {e.start}); re-export the file as UTF-8",
            path=path,
            line=line,
        ) from e


def _csv_rows(text: str, *, path: Path, columns: Sequence[str], delimiter: str) -> Iterator[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError("file is empty", path=path, line=1)
        header = [h.strip() for h in header]
        for column in columns:
            if column not in header:
                raise DataError(f"missing column; the header has {header}", path=path, line=1, field=column)
        position = {column: header.index(column) for column in columns}
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                return
            if not any(field.strip() for field in row):  # blank line
                continue
            if len(row) != len(header):
                raise DataError(
                    f"row has {len(row)} fields, the header has {len(header)}", path=path, line=start
                )
            values = {column: row[i] for column, i in position.items()}
            yield _row(values, columns, line=start)
    except csv.Error as e:
        raise DataError(f"malformed CSV: {e}", path=path, line=reader.line_num) from e


def _jsonl_rows(text: str, *, path: Path, columns: Sequence[str]) -> Iterator[_Row]:
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON: {e.msg} at column {e.colno}", path=path, line=line_no) from e
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object, got {type(record).__name__}", path=path, line=line_no)
        values: dict[str, str] = {}
        for column in columns:
            if column not in record:
                raise DataError("missing field", path=path, line=line_no, field=column)
            values[column] = _json_scalar(record[column], path=path, line=line_no, field=column)
        yield _row(values, columns, line=line_no)


def _json_scalar(value: object, *, path: Path, line: int, field: str) -> str:
    # bool is an int subclass; a label of `true` is almost certainly an export bug.
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise DataError(
        f"expected a string or an integer, got {type(value).__name__}",
        path=path,
        line=line,
        field=field,
    )


def _row(values: dict[str, str], columns: Sequence[str], *, line: int) -> _Row:
    text_column, label_column, *meta_columns = columns
    return _Row(
        line=line,
        text=values[text_column],
        label=values[label_column].strip(),
        meta={column: values[column] for column in meta_columns},
    )


def _build(
    rows: list[_Row],
    *,
    path: Path,
    columns: Sequence[str],
    label_names: Sequence[str] | None,
    name: str,
) -> Dataset:
    text_column, label_column, *meta_columns = columns
    if not rows:
        raise DataError("no data rows", path=path)
    for row in rows:
        if not row.text.strip():
            raise DataError("empty or whitespace-only text", path=path, line=row.line, field=text_column)
        if not row.label:
            raise DataError("empty label", path=path, line=row.line, field=label_column)
    names = tuple(label_names) if label_names is not None else _infer_label_names(row.label for row in rows)
    index = {label: i for i, label in enumerate(names)}
    if len(index) != len(names):
        raise DataError("duplicate label names", field="label_names")
    for row in rows:
        if row.label not in index:
            raise DataError(
                f"unknown label; expected one of {list(names)}",
                path=path,
                line=row.line,
                field=label_column,
            )
    return Dataset(
        texts=[row.text for row in rows],
        labels=[index[row.label] for row in rows],
        label_names=names,
        name=name,
        meta={column: [row.meta[column] for row in rows] for column in meta_columns},
    )


def _infer_label_names(labels: Iterator[str]) -> tuple[str, ...]:
    distinct = set(labels)
    if all(_INTEGER.fullmatch(label) for label in distinct):
        return tuple(sorted(distinct, key=int))
    return tuple(sorted(distinct))
