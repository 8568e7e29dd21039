"""A TenSEAL CKKS chunk, parsed and bounded before TenSEAL sees it.

A chunk is TenSEAL's `CKKSVectorProto` (protobuf: field 1 the chunk's value counts, field 2 the serialised
SEAL ciphertexts, field 3 the scale) whose ciphertexts are SEAL objects: a 16-byte header (magic 0xA15E,
header size, version, compression mode, reserved, total size) and their members, compressed with zstd by
default. TenSEAL loads every ciphertext the protobuf holds and SEAL inflates each before anything checks
its size, so a chunk of a thousand compressed zero ciphertexts (4 bytes per 128 KiB) made it allocate
hundreds of MiB before it was refused. Here the protobuf must hold exactly one ciphertext, with this
chunk's value count and scale, whose inflated size is at most what a ciphertext of these parameters
takes: from its zstd frame header (the content size, which SEAL always writes and the decoder holds the
frame to) and block headers (raw and run-length blocks state what they regenerate), without inflating it.

Formats: protobuf encoding (protobuf.dev/programming-guides/encoding), SEAL's `SEALHeader`
(native/src/seal/serialization.h), zstd frames (RFC 8878, section 3.1.1).
"""

from __future__ import annotations

import struct

from protocol.crypto.errors import CiphertextError

_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_SEAL_MAGIC = 0xA15E
_SEAL_MAJOR = 4
_COMPRESSION_NONE, _COMPRESSION_ZSTD = 0, 2
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: RFC 8878, 3.1.1.2.4: no block regenerates more than 128 KiB.
_ZSTD_MAX_BLOCK = 1 << 17
#: SEAL's ciphertext members before its coefficients: parms_id (32), NTT flag (1), size, degree, primes,
#: scale, correction factor (8 each), then the coefficient array's own SEAL header (16) and count (8).
_MEMBERS_OVERHEAD = 32 + 1 + 5 * 8 + _SEAL_HEADER.size + 8
_MAX_VARINT_BYTES = 10


def members_bytes(*, degree: int, primes: int) -> int:
    """The inflated size of a fresh CKKS ciphertext's members: 2 polynomials of `degree` 8-byte
    coefficients per prime, after their metadata."""
    return _MEMBERS_OVERHEAD + 2 * degree * primes * 8


def check_chunk(chunk: bytes | memoryview, *, values: int, scale: float, max_members: int) -> None:
    """Raise `CiphertextError` unless `chunk` is one `CKKSVectorProto` of `values` values at `scale` holding
    exactly one SEAL ciphertext whose members take at most `max_members` bytes once inflated."""
    view = memoryview(chunk).cast("B")
    sizes: list[int] = []
    ciphertexts: list[memoryview] = []
    scales: list[float] = []
    pos = 0
    while pos < len(view):
        key, pos = _varint(view, pos)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 0:
            size, pos = _varint(view, pos)
            sizes.append(size)
        elif field in (1, 2) and wire == 2:
            length, pos = _varint(view, pos)
            if length > len(view) - pos:
                raise CiphertextError(
                    f"CKKS chunk field {field} claims {length} bytes, {len(view) - pos} remain"
                )
            body, pos = view[pos : pos + length], pos + length
            if field == 2:
                ciphertexts.append(body)
            else:
                inner = 0
                while inner < len(body):
                    size, inner = _varint(body, inner)
                    sizes.append(size)
        elif field == 3 and wire == 1:
            if len(view) - pos < 8:
                raise CiphertextError("CKKS chunk is truncated in its scale")
            scales.append(struct.unpack_from("<d", view, pos)[0])
            pos += 8
        else:
            raise CiphertextError(
                f"CKKS chunk holds protobuf field {field} of wire type {wire}, unknown here"
            )
    if len(ciphertexts) != 1 or sizes != [values] or scales not in ([scale], []):
        raise CiphertextError(
            f"CKKS chunk holds {len(ciphertexts)} ciphertexts of sizes {sizes[:4]} at scales {scales[:2]}, "
            f"expected 1 of [{values}] at {scale:g}"
        )
    _check_seal_object(ciphertexts[0], max_members=max_members)


def _check_seal_object(data: memoryview, *, max_members: int) -> None:
    if len(data) < _SEAL_HEADER.size:
        raise CiphertextError(f"CKKS ciphertext is {len(data)} bytes, shorter than SEAL's header")
    magic, header_size, major, _minor, compression, reserved, size = _SEAL_HEADER.unpack_from(data)
    if (magic, header_size, major, reserved) != (_SEAL_MAGIC, _SEAL_HEADER.size, _SEAL_MAJOR, 0):
        raise CiphertextError(
            f"CKKS ciphertext header (magic, header size, major version, reserved) is "
            f"({magic:#06x}, {header_size}, {major}, {reserved}), expected "
            f"({_SEAL_MAGIC:#06x}, {_SEAL_HEADER.size}, {_SEAL_MAJOR}, 0)"
        )
    if size != len(data):
        raise CiphertextError(f"CKKS ciphertext header announces {size} bytes, the chunk holds {len(data)}")
    body = data[_SEAL_HEADER.size :]
    if compression == _COMPRESSION_NONE:
        inflated = len(body)
    elif compression == _COMPRESSION_ZSTD:
        inflated = _zstd_content_size(body)
    else:
        raise CiphertextError(
            f"CKKS ciphertext uses compression mode {compression}; only none and zstd are read"
        )
    if inflated > max_members:
        raise CiphertextError(
            f"CKKS ciphertext inflates to {inflated} bytes, a ciphertext of these parameters takes at most "
            f"{max_members}"
        )


def _zstd_content_size(frame: memoryview) -> int:
    """The size one zstd frame declares it inflates to, after checking that its blocks cannot regenerate
    more than that (raw and run-length blocks state their size; a compressed block regenerates at most
    128 KiB and the decoder refuses any byte past the declared size) and that it ends the ciphertext."""
    if len(frame) < 6 or bytes(frame[:4]) != _ZSTD_MAGIC:
        raise CiphertextError("CKKS ciphertext is not one zstd frame")
    descriptor = frame[4]
    size_flag, single_segment, checksum = descriptor >> 6, (descriptor >> 5) & 1, (descriptor >> 2) & 1
    if descriptor & 0b1011:  # bit 3 reserved, bits 0-1 a dictionary id: neither in SEAL's frames
        raise CiphertextError(f"CKKS ciphertext's zstd frame descriptor {descriptor:#04x} names a dictionary")
    if size_flag == 0 and not single_segment:
        raise CiphertextError("CKKS ciphertext's zstd frame does not declare its content size")
    pos = 5 + (0 if single_segment else 1)
    width = (1, 2, 4, 8)[size_flag]
    if len(frame) < pos + width:
        raise CiphertextError("CKKS ciphertext's zstd frame header is truncated")
    declared = int.from_bytes(frame[pos : pos + width], "little") + (256 if width == 2 else 0)
    pos += width
    stated = 0
    while True:
        if len(frame) < pos + 3:
            raise CiphertextError("CKKS ciphertext's zstd frame is truncated in a block header")
        header = int.from_bytes(frame[pos : pos + 3], "little")
        pos += 3
        last, kind, size = header & 1, (header >> 1) & 3, header >> 3
        if kind == 3 or size > _ZSTD_MAX_BLOCK:
            raise CiphertextError(
                f"CKKS ciphertext's zstd frame has an invalid block (type {kind}, {size} bytes)"
            )
        if kind != 2:  # raw (the bytes themselves) and run-length (one byte, repeated): their size is exact
            stated += size
        pos += 1 if kind == 1 else size
        if stated > declared:
            raise CiphertextError(
                f"CKKS ciphertext's zstd blocks regenerate more than the {declared} bytes its frame declares"
            )
        if last:
            break
    if pos + 4 * checksum != len(frame):
        raise CiphertextError("CKKS ciphertext's zstd frame does not end where its SEAL header says")
    return declared


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 7 * _MAX_VARINT_BYTES, 7):
        if pos >= len(data):
            raise CiphertextError("CKKS chunk is truncated in a protobuf varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise CiphertextError("CKKS chunk holds a protobuf varint longer than 10 bytes")
