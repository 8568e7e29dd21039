"""The binary envelope around every serialised ciphertext, shared by all schemes.

Layout (big-endian), checked field by field before any byte reaches TenSEAL or gmpy2:

    magic        4 bytes   b"FLHE"
    version      u8        FORMAT_VERSION
    scheme       u8        1 = ckks, 2 = paillier, 3 = none
    flags        u16       0 (reserved)
    fingerprint  32 bytes  SHA-256 of the scheme's public key and parameters
    length       u64       number of plaintext values
    count        u32       number of encryptions summed into this ciphertext
    chunks       u32       number of ciphertext chunks, ceil(length / slots)
    sizes        chunks x u32, the byte length of each chunk
    payload      the chunks, concatenated, nothing after them

The fingerprint catches honest mistakes (an upload encrypted under last year's key, another federation's
parameters); it is a label, not a proof: anyone can write it into a ciphertext made under another key.
What binds a ciphertext is its sender's signature over its digest (which covers the fingerprint), and a
ciphertext under another key that is decrypted anyway gives noise that `HEScheme.decrypt`'s range check
refuses (tests/adversarial/test_review_issue20_crypto.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protocol.crypto.errors import CiphertextError
from protocol.crypto.params import HEKind

MAGIC = b"FLHE"
FORMAT_VERSION = 1
FINGERPRINT_BYTES = 32
# 32 M values: well above the 4 M of the largest adapter, small enough that no size computed from a
# header can exhaust memory before the payload length check refuses it.
MAX_VECTOR_LENGTH = 1 << 25
MAX_COUNT = (1 << 32) - 1

_FIXED = struct.Struct(">4sBBH32sQII")
_SIZE = struct.Struct(">I")
#: One byte per scheme on the wire (also used by the key store); never renumber.
SCHEME_CODES: dict[HEKind, int] = {HEKind.CKKS: 1, HEKind.PAILLIER: 2, HEKind.NONE: 3}
SCHEMES_BY_CODE = {code: kind for kind, code in SCHEME_CODES.items()}

HEADER_BYTES = _FIXED.size


def short_hex(fingerprint: bytes) -> str:
    """The first 8 bytes of a fingerprint, as people compare them."""
    return fingerprint[:8].hex() + "…"


def chunk_lengths(length: int, slots: int) -> list[int]:
    """Number of values in each chunk of a vector of `length` values packed `slots` to a chunk."""
    full, rest = divmod(length, slots)
    return [slots] * full + ([rest] if rest else [])


@dataclass(frozen=True)
class Expectation:
    """What this federation's scheme accepts. `chunk_bytes(values)` gives the (min, max) byte size of a
    chunk holding that many values."""

    kind: HEKind
    fingerprint: bytes
    slots: int
    max_count: int
    chunk_bytes: Callable[[int], tuple[int, int]]
    expected_length: int | None = None


@dataclass(frozen=True)
class Envelope:
    """A decoded envelope: header fields and the chunk bytes, not yet handed to any library."""

    kind: HEKind
    fingerprint: bytes
    length: int
    count: int
    chunks: list[memoryview]


def max_encoded_bytes(expect: Expectation, length: int) -> int:
    """The most bytes `decode` accepts for a vector of `length` values: header, chunk table, and each
    chunk at its largest size."""
    lengths = chunk_lengths(length, expect.slots)
    return _FIXED.size + _SIZE.size * len(lengths) + sum(expect.chunk_bytes(values)[1] for values in lengths)


def encode(*, kind: HEKind, fingerprint: bytes, length: int, count: int, chunks: Sequence[bytes]) -> bytes:
    if len(fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(fingerprint)}")
    header = _FIXED.pack(
        MAGIC, FORMAT_VERSION, SCHEME_CODES[kind], 0, fingerprint, length, count, len(chunks)
    )
    sizes = struct.pack(f">{len(chunks)}I", *(len(chunk) for chunk in chunks))
    return b"".join([header, sizes, *chunks])


def decode(data: bytes | bytearray | memoryview, expect: Expectation) -> Envelope:
    """Check `data` against `expect` and split it into chunks. Raises `CiphertextError` naming the field."""
    view = memoryview(data).cast("B")
    if len(view) < _FIXED.size:
        raise CiphertextError(
            f"ciphertext is truncated: its header needs {_FIXED.size} bytes, got {len(view)}"
        )
    magic, version, code, flags, fingerprint, length, count, n_chunks = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise CiphertextError(f"not a fedlora ciphertext: it starts with {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise CiphertextError(
            f"ciphertext format version {version} is not supported, expected {FORMAT_VERSION}"
        )
    kind = SCHEMES_BY_CODE.get(code)
    if kind is None:
        raise CiphertextError(f"ciphertext names unknown scheme code {code}")
    if kind != expect.kind:
        raise CiphertextError(f"ciphertext is {kind.value}, this federation uses {expect.kind.value}")
    if flags != 0:
        raise CiphertextError(f"ciphertext sets unknown flags {flags:#06x}")
    if fingerprint != expect.fingerprint:
        raise CiphertextError(
            f"ciphertext was made for key fingerprint {short_hex(fingerprint)}, "
            f"this federation's is {short_hex(expect.fingerprint)}"
        )
    _check_shape(length, count, n_chunks, expect)
    table_end = _FIXED.size + _SIZE.size * n_chunks
    if len(view) < table_end:
        raise CiphertextError(
            f"ciphertext is truncated: its chunk table needs {table_end} bytes, got {len(view)}"
        )
    sizes = struct.unpack_from(f">{n_chunks}I", view, _FIXED.size)
    for index, (size, values) in enumerate(zip(sizes, chunk_lengths(length, expect.slots), strict=True)):
        low, high = expect.chunk_bytes(values)
        if not low <= size <= high:
            raise CiphertextError(
                f"ciphertext chunk {index} claims {size} bytes, a chunk of {values} values takes "
                + (f"{low}" if low == high else f"{low} to {high}")
            )
    total = table_end + sum(sizes)
    if len(view) != total:
        state = "truncated" if len(view) < total else "followed by extra bytes"
        raise CiphertextError(f"ciphertext is {state}: its header announces {total} bytes, got {len(view)}")
    chunks = []
    offset = table_end
    for size in sizes:
        chunks.append(view[offset : offset + size])
        offset += size
    return Envelope(kind=kind, fingerprint=bytes(fingerprint), length=length, count=count, chunks=chunks)


def _check_shape(length: int, count: int, n_chunks: int, expect: Expectation) -> None:
    if not 1 <= length <= MAX_VECTOR_LENGTH:
        raise CiphertextError(f"ciphertext claims {length} values, the limit is 1 to {MAX_VECTOR_LENGTH}")
    if expect.expected_length is not None and length != expect.expected_length:
        raise CiphertextError(f"ciphertext holds {length} values, expected {expect.expected_length}")
    if not 1 <= count <= expect.max_count:
        raise CiphertextError(
            f"ciphertext claims a sum of {count} encryptions, this scheme allows 1 to {expect.max_count}"
        )
    wanted = len(chunk_lengths(length, expect.slots))
    if n_chunks != wanted:
        raise CiphertextError(
            f"ciphertext has {n_chunks} chunks, {length} values at {expect.slots} per chunk need {wanted}"
        )
