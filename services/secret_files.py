"""Files that hold a secret (an API token, a private key): created with mode 0600, never chmod-ed after, so no
other user can read them even for an instant."""

from __future__ import annotations

import os
from pathlib import Path


def write_secret(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` with mode 0600, atomically: a reader sees the whole file or none. The file is
    written under a temporary name created with the mode (`O_EXCL`), then renamed over `path`, so an older
    file's looser mode does not carry over."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    tmp.replace(path)
