"""The binary body of an upload: a `ClientUpdate` whose ciphertext travels as raw bytes, not base64 in JSON.

A hospital's ciphertext is most of its upload (tens of MB at a million values): in JSON it costs a third more
bytes on the wire and a base64 encode and decode, and the edge parses the whole body as JSON. The frame sends
the same message in two parts (`UPLOAD_FRAME_MEDIA_TYPE`), all integers big-endian:

    magic      4 bytes   b"FLUP"
    version    1 byte    1
    header     4 bytes   n, the header's length (at most MAX_HEADER_BYTES), then n bytes: the update's fields
                         but `ciphertext`, as the JSON `ClientUpdate` carries them (signatures base64)
    ciphertext 8 bytes   m, the ciphertext's length, then exactly m bytes: the serialised ciphertext as is

It is the same message as the JSON body, field for field, so the same signature covers it: the upload's
signature covers every field and the ciphertext by its SHA-256 (`ClientUpdate.signing_payload`), which is the
digest of the very bytes the edge stores. A body that is not a frame (wrong magic or version, a header longer
than its bound or than the body, a ciphertext length other than what follows the header) raises
`UploadFrameError` naming the part.
"""

from __future__ import annotations

import struct
from typing import Any

from pydantic import BaseModel, create_model

from protocol.messages import ClientUpdate, Message

#: The media type of the frame (`Content-Type`); `application/json` stays the `ClientUpdate` as JSON.
UPLOAD_FRAME_MEDIA_TYPE = "application/octet-stream"
MAGIC = b"FLUP"
VERSION = 1
#: The header holds ids, numbers, a nonce, a digest and two signatures: far below this.
MAX_HEADER_BYTES = 64 * 1024
_PREFIX = struct.Struct(">4sBI")
_LENGTH = struct.Struct(">Q")


class UploadFrameError(ValueError):
    """A body that is not an upload frame; `field` names the part (`frame.magic`, `frame.header`, ...)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def _header_model() -> type[BaseModel]:
    """`ClientUpdate`'s fields but the ciphertext, with their types, bounds and defaults: one copy of each."""
    fields: dict[str, Any] = {
        name: (info.annotation, info)
        for name, info in ClientUpdate.model_fields.items()
        if name not in ("ciphertext", "protocol_version")
    }
    return create_model("ClientUpdateHeader", __base__=Message, **fields)


_HEADER = _header_model()


def encode_upload(update: ClientUpdate) -> bytes:
    """`update` as a frame: its other fields as JSON, then its ciphertext as is."""
    header = update.model_dump_json(exclude={"ciphertext"}).encode()
    ciphertext = update.ciphertext
    return b"".join(
        (
            _PREFIX.pack(MAGIC, VERSION, len(header)),
            header,
            _LENGTH.pack(len(ciphertext)),
            ciphertext,
        )
    )


def decode_upload(body: bytes) -> ClientUpdate:
    """The `ClientUpdate` a frame carries, validated as the JSON body is; `UploadFrameError` for a body that is
    not a frame, `pydantic.ValidationError` for a header or ciphertext the model refuses."""
    if len(body) < _PREFIX.size:
        raise UploadFrameError(
            f"an upload frame starts with {_PREFIX.size} bytes (magic, version, header length); the body "
            f"has {len(body)}",
            field="frame",
        )
    magic, version, header_bytes = _PREFIX.unpack_from(body)
    if magic != MAGIC:
        raise UploadFrameError(
            f"an upload frame starts with {MAGIC!r}, this one with {magic!r}", field="frame"
        )
    if version != VERSION:
        raise UploadFrameError(f"upload frame version {version}; this service reads {VERSION}", field="frame")
    if header_bytes > MAX_HEADER_BYTES:
        raise UploadFrameError(
            f"the header declares {header_bytes} bytes, more than {MAX_HEADER_BYTES}", field="frame.header"
        )
    start = _PREFIX.size + header_bytes
    if len(body) < start + _LENGTH.size:
        raise UploadFrameError(
            f"the body ends before its {header_bytes}-byte header and the ciphertext length "
            f"({len(body)} bytes)",
            field="frame.header",
        )
    (ciphertext_bytes,) = _LENGTH.unpack_from(body, start)
    carried = len(body) - start - _LENGTH.size
    if ciphertext_bytes != carried:
        raise UploadFrameError(
            f"the frame declares a ciphertext of {ciphertext_bytes} bytes and carries {carried}",
            field="frame.ciphertext",
        )
    header = _HEADER.model_validate_json(body[_PREFIX.size : start])
    # The header's fields as validated (python mode takes them as they are) and the ciphertext's bytes.
    return ClientUpdate.model_validate({**dict(header), "ciphertext": body[start + _LENGTH.size :]})
