"""Tasks for the cloud's decryption worker processes that fail there, kept in a module that imports
nothing heavy: a spawned worker imports it to run them (tests/cloud/test_streaming_close.py)."""

from __future__ import annotations

import os


def dying_slice(primes: tuple[int, int], ciphertexts: list[bytes]) -> list[bytes]:
    """A decryption worker's task that kills its worker process, as the OOM killer would."""
    os._exit(1)


def raising_slice(primes: tuple[int, int], ciphertexts: list[bytes]) -> list[bytes]:
    """A decryption worker's task that raises inside its worker."""
    raise ArithmeticError("injected")


def dying_start(started: object) -> None:
    """A decryption worker's initializer that kills its worker process before it says it started."""
    os._exit(1)
