"""Where the cloud's key-encryption key (KEK) comes from: `FEDLORA_KEK` or `FEDLORA_KEK_FILE`.

The KEK seals the federation's HE secret key at rest (`protocol.crypto.keystore`). It is 32 bytes, given
as 64 hex digits or as base64, either in the variable itself or in the file it names. A file holds the 32
raw bytes only where the operator says so (`FEDLORA_KEK_RAW=1`) and they are not all printable: otherwise
a 32-character passphrase someone wrote into the file would be taken as the key itself, with a
passphrase's entropy. Placeholders ("changeme", all-zero, one byte repeated) are refused: a deployment
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
#: "1": the file `FEDLORA_KEK_FILE` names holds the 32 raw bytes (never all printable), not hex or base64.
KEK_RAW_ENV = "FEDLORA_KEK_RAW"
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
        raw = env.get(KEK_RAW_ENV, "0").strip() == "1"
        return _decode(_read_file(path), source=f"{KEK_FILE_ENV} ({path})", raw=raw)
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


def _decode(data: str | bytes, *, source: str, raw: bool = False) -> bytes:
    if raw:
        key = _raw_key(data, source=source)
    else:
        try:
            text = data.decode("ascii") if isinstance(data, bytes) else data
        except UnicodeDecodeError as e:
            raise KekError(
                f"{source} is not hex/base64 text; a file of 32 raw bytes needs {KEK_RAW_ENV}=1"
            ) from e
        text = text.strip()
        if text.lower() in _PLACEHOLDERS:
            raise KekError(f"{source} is the placeholder {text!r}; set a real random 32-byte key")
        key = _parse_text(text, source=source)
    if len(set(key)) == 1:
        raise KekError(f"{source} is the byte {key[0]:#04x} repeated 32 times: a placeholder, not a key")
    return key


def _is_text(key: bytes) -> bool:
    """Whether `key` reads as printable text in UTF-8 (ASCII or any other script): something typed, which 32
    random bytes almost never are."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(char.isprintable() or char in "\t\n\r" for char in text)


def _raw_key(data: str | bytes, *, source: str) -> bytes:
    """The 32 raw bytes of a KEK file (`FEDLORA_KEK_RAW=1`): refused when they are all printable, since
    then they are a passphrase or a placeholder typed into the file, not 256 random bits."""
    key = data.encode() if isinstance(data, str) else data
    if len(key) != KEK_BYTES:
        raise KekError(
            f"{source} holds {len(key)} bytes; with {KEK_RAW_ENV}=1 it must hold {KEK_BYTES} raw bytes"
        )
    if _is_text(key):
        raise KekError(
            f"{source} holds {KEK_BYTES} bytes of printable text: a passphrase, not a raw key; write 32 random "
            f"bytes (or their hex or base64 without {KEK_RAW_ENV})"
        )
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
