"""Hand-made TenSEAL chunks for the decompression tests: a SEAL ciphertext of zeros, zstd-compressed without
a zstd library (its metadata in a raw block, its coefficients in RLE blocks, 4 bytes per 128 KiB), and a
chunk that repeats it as often as the envelope's chunk size allows."""

from __future__ import annotations

import struct
from collections.abc import Sequence

_SEAL_HEADER = struct.Struct(
    "<HBBBBHQ"
)  # magic, header size, version major, minor, compression, reserved, size
_SEAL_MAGIC = 0xA15E
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_RLE_BLOCK = 1 << 17


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def seal_header(compression: int, body_bytes: int) -> bytes:
    return _SEAL_HEADER.pack(
        _SEAL_MAGIC, _SEAL_HEADER.size, 4, 3, compression, 0, _SEAL_HEADER.size + body_bytes
    )


def zero_ciphertext(parms_id: Sequence[int], *, degree: int, primes: int, scale: float) -> bytes:
    """A valid SEAL ciphertext (2 polynomials of zeros) whose 2 * degree * primes coefficients take 4 bytes
    per 128 KiB once compressed."""
    coefficients = 2 * degree * primes
    data = struct.pack("<Q", coefficients)
    inner = seal_header(0, len(data) + 8 * coefficients)
    members = struct.pack("<4QBQQQdQ", *parms_id, 1, 2, degree, primes, scale, 1) + inner + data
    frame = bytearray(_ZSTD_MAGIC + bytes([0x00, 0x38]))  # no content size, window 2^17
    frame += (len(members) << 3).to_bytes(3, "little") + members  # a raw block
    left = 8 * coefficients
    while left:
        size = min(left, _RLE_BLOCK)
        left -= size
        frame += ((size << 3) | (1 << 1) | (0 if left else 1)).to_bytes(3, "little") + b"\x00"
    return seal_header(2, len(frame)) + bytes(frame)


def repeated_chunk(ciphertext: bytes, *, values: int, scale: float, limit: int) -> bytes:
    """A TenSEAL `CKKSVectorProto` of at most `limit` bytes holding `ciphertext` as many times as fit."""
    field = b"\x12" + varint(len(ciphertext)) + ciphertext
    head = b"\x0a" + varint(len(varint(values))) + varint(values)
    tail = b"\x19" + struct.pack("<d", scale)
    return head + field * ((limit - len(head) - len(tail)) // len(field)) + tail
