"""Where the cloud's key-encryption key (KEK) comes from: `FEDLORA_KEK` or `FEDLORA_KEK_FILE`.

The KEK seals the federation's HE secret key at rest (`protocol.crypto.keystore`). It is 32 bytes, given
as 64 hex digits or as base64, either in the variable itself or in the file it names (a file may also
hold the 32 raw bytes). Placeholders ("changeme", all-zero, one byte repeated) are refused: a deployment
that forgot to set a real key must fail at start, not run with a key everyone knows.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path

KEK_ENV = "FEDLORA_KEK"
KEK_FILE_ENV = "FEDLORA_KEK_FILE"
KEK_BYTES = 32
_MAX_FILE_BYTES = 4096
_PLACEHOLDERS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "secret",
        "password",
        "default",
        "kek",
        "none",
        "todo",
    }
)


class KekError(ValueError):
    """The key-encryption key is missing, malformed or a placeholder. The message names the variable."""


def load_kek(environ: Mapping[str, str] | None = None) -> bytes:
    """The 32-byte KEK from `FEDLORA_KEK` or the file named by `FEDLORA_KEK_FILE` (exactly one of them)."""
    env = os.environ if environ is None else environ
    inline, path = env.get(KEK_ENV), env.get(KEK_FILE_ENV)
    if inline is not None and path is not None:
        raise KekError(f"set only one of {KEK_ENV} and {KEK_FILE_ENV}, not both")
    if inline is not None:
        return _decode(inline, source=KEK_ENV)
    if path is not None:
        return _decode(_read_file(path), source=f"{KEK_FILE_ENV} ({path})")
    raise KekError(
        f"no key-encryption key: set {KEK_ENV} to 32 random bytes in hex or base64 "
        f"(python -c 'import secrets; print(secrets.token_hex(32))'), or {KEK_FILE_ENV} to a file holding it"
    )


def _read_file(path: str) -> bytes:
    file = Path(path)
    try:
        if file.stat().st_size > _MAX_FILE_BYTES:
            raise KekError(f"{KEK_FILE_ENV} names {path}, which is larger than {_MAX_FILE_BYTES} bytes")
        return file.read_bytes()
    except OSError as e:
        raise KekError(f"{KEK_FILE_ENV} names {path}, which cannot be read: {e.strerror}") from e


def _decode(raw: str | bytes, *, source: str) -> bytes:
    if isinstance(raw, bytes) and len(raw) == KEK_BYTES:
        key = raw  # a file of 32 raw bytes
    else:
        try:
            text = raw.decode("ascii") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as e:
            raise KekError(f"{source} is neither 32 raw bytes nor hex/base64 text") from e
        text = text.strip()
        if text.lower() in _PLACEHOLDERS:
            raise KekError(f"{source} is the placeholder {text!r}; set a real random 32-byte key")
        key = _parse_text(text, source=source)
    if len(set(key)) == 1:
        raise KekError(f"{source} is the byte {key[0]:#04x} repeated 32 times: a placeholder, not a key")
    return key


def _parse_text(text: str, *, source: str) -> bytes:
    if len(text) == 2 * KEK_BYTES:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEK_BYTES:
        raise KekError(
            f"{source} must be {KEK_BYTES} bytes as {2 * KEK_BYTES} hex digits or base64, "
            f"got {len(text)} characters that decode to neither"
        )
    return key
