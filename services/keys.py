"""Where the cloud's key-encryption keys (KEKs) come from: `FEDLORA_KEK` or `FEDLORA_KEK_FILE`, and while the KEK
is being rotated, the one it replaces in `FEDLORA_KEK_PREVIOUS` or `FEDLORA_KEK_PREVIOUS_FILE`.

The KEK seals the federation's HE secret key, its plan-signing key and each round's central noise at rest
(`protocol.crypto.keystore`); the previous KEK only opens what was sealed before the rotation, until `fedlora
kek rotate` has re-sealed it (docs/operations.md, "Rotating the KEK"). Each is 32 bytes, given
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
import secrets
from collections.abc import Mapping
from pathlib import Path

from protocol.crypto import KekRing

KEK_ENV = "FEDLORA_KEK"
KEK_FILE_ENV = "FEDLORA_KEK_FILE"
#: "1": the file `FEDLORA_KEK_FILE` names holds the 32 raw bytes (never all printable), not hex or base64.
KEK_RAW_ENV = "FEDLORA_KEK_RAW"
#: The KEK being rotated away: opens records sealed under it, seals nothing.
KEK_PREVIOUS_ENV = "FEDLORA_KEK_PREVIOUS"
KEK_PREVIOUS_FILE_ENV = "FEDLORA_KEK_PREVIOUS_FILE"
KEK_PREVIOUS_RAW_ENV = "FEDLORA_KEK_PREVIOUS_RAW"
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
    kek = _load(env, KEK_ENV, KEK_FILE_ENV, KEK_RAW_ENV)
    if kek is None:
        raise KekError(
            f"no key-encryption key: set {KEK_ENV} to 32 random bytes in hex or base64 (`fedlora kek "
            f"generate`), or {KEK_FILE_ENV} to a file holding it"
        )
    return kek


def load_keks(environ: Mapping[str, str] | None = None) -> KekRing:
    """The current KEK (`load_kek`) and the previous one from `FEDLORA_KEK_PREVIOUS` or the file named by
    `FEDLORA_KEK_PREVIOUS_FILE`, if either is set; the previous one must not be the current one."""
    env = os.environ if environ is None else environ
    current = load_kek(env)
    previous = _load(env, KEK_PREVIOUS_ENV, KEK_PREVIOUS_FILE_ENV, KEK_PREVIOUS_RAW_ENV)
    if previous == current:
        raise KekError(
            f"{KEK_PREVIOUS_ENV} holds the same key as {KEK_ENV}: set it to the KEK being replaced, or unset it"
        )
    return KekRing(current=current, previous=previous)


def new_kek() -> str:
    """A fresh KEK from the operating system's entropy, as 64 hex digits (what `load_kek` reads)."""
    return secrets.token_hex(KEK_BYTES)


def _load(env: Mapping[str, str], inline_var: str, file_var: str, raw_var: str) -> bytes | None:
    inline, path = env.get(inline_var), env.get(file_var)
    if inline is not None and path is not None:
        raise KekError(f"set only one of {inline_var} and {file_var}, not both")
    if inline is not None:
        return _decode(inline, source=inline_var, raw_var=raw_var)
    if path is not None:
        raw = env.get(raw_var, "0").strip() == "1"
        return _decode(
            _read_file(path, file_var=file_var), source=f"{file_var} ({path})", raw=raw, raw_var=raw_var
        )
    return None


def _read_file(path: str, *, file_var: str) -> bytes:
    file = Path(path)
    try:
        if file.stat().st_size > _MAX_FILE_BYTES:
            raise KekError(f"{file_var} names {path}, which is larger than {_MAX_FILE_BYTES} bytes")
        return file.read_bytes()
    except OSError as e:
        raise KekError(f"{file_var} names {path}, which cannot be read: {e.strerror}") from e


def _decode(data: str | bytes, *, source: str, raw_var: str, raw: bool = False) -> bytes:
    if raw:
        key = _raw_key(data, source=source, raw_var=raw_var)
    else:
        try:
            text = data.decode("ascii") if isinstance(data, bytes) else data
        except UnicodeDecodeError as e:
            raise KekError(
                f"{source} is not hex/base64 text; a file of 32 raw bytes needs {raw_var}=1"
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


def _raw_key(data: str | bytes, *, source: str, raw_var: str) -> bytes:
    """The 32 raw bytes of a KEK file (`FEDLORA_KEK_RAW=1`): refused when they are all printable, since
    then they are a passphrase or a placeholder typed into the file, not 256 random bits."""
    key = data.encode() if isinstance(data, str) else data
    if len(key) != KEK_BYTES:
        raise KekError(
            f"{source} holds {len(key)} bytes; with {raw_var}=1 it must hold {KEK_BYTES} raw bytes"
        )
    if _is_text(key):
        raise KekError(
            f"{source} holds {KEK_BYTES} bytes of printable text: a passphrase, not a raw key; write 32 random "
            f"bytes (or their hex or base64 without {raw_var})"
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
