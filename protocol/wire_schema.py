"""What the wire models' JSON schemas state, so that a request valid under the document is one the
validators take.

Bytes (`Base64`) are base64 text in JSON. Pydantic's own bytes schema says `format: base64url` and carries the byte counts as `minLength` /
`maxLength`, which a JSON Schema validator applies to the text: a 32-byte key (44 characters) broke its own
document, and a client generating from the document sent text that is not base64 at all. `Base64`
states the alphabet, the padding and the length in characters, and its validator refuses text that does
not match that pattern (pydantic alone also takes unpadded text).

Either alphabet is taken, one per value: standard (`+/`, what most clients send) and URL-safe (`-_`, what
pydantic sends); padded, with the unused bits of the last symbol zero (RFC 4648, section 3.5).

Maps whose keys have a pattern (`close_pattern_maps`): pydantic states the pattern only as
`patternProperties`, which leaves any other key allowed, with any value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

_ALPHABETS = ("A-Za-z0-9+/", "A-Za-z0-9_-")
# The last group of 1 or 2 bytes: the unused bits of the symbol before the padding are zero (4 of them
# before `==`, 2 before `=`).
_ONE_BYTE = "[{s}][AQgw]=="
_TWO_BYTES = "[{s}]{{2}}[AEIMQUYcgkosw048]="


def base64_pattern(min_bytes: int, max_bytes: int) -> str:
    """The regular expression of padded base64 text: of exactly `min_bytes` bytes where the two are equal,
    of any length otherwise (`base64_lengths` bounds the characters)."""
    if min_bytes == max_bytes:
        full, rest = divmod(min_bytes, 3)
        groups, last = f"{{{full}}}", ("", _ONE_BYTE, _TWO_BYTES)[rest]
    else:
        groups, last = "*", f"|{_ONE_BYTE}|{_TWO_BYTES}"
    options = [f"(?:[{s}]{{4}}){groups}(?:{last.format(s=s)})" for s in _ALPHABETS]
    return f"^(?:{'|'.join(options)})$"


_SYMBOLS = tuple(re.compile(f"[{s}]*") for s in _ALPHABETS)
_BEFORE_PADDING = {2: "AQgw", 1: "AEIMQUYcgkosw048"}  # `_ONE_BYTE`, `_TWO_BYTES`


def is_padded_base64(text: str, *, min_bytes: int, max_bytes: int) -> bool:
    """Whether `text` matches `base64_pattern(min_bytes, max_bytes)`, decided without it: that pattern's
    groups make the regular expression engine crawl over an upload's megabytes (tens of MB/s), where one
    character class runs at memory speed. tests/unit/test_wire_base64.py holds the two to the same answers."""
    if len(text) % 4:
        return False
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    symbols = len(text) - padding
    if min_bytes == max_bytes and (len(text), padding) != (4 * -(-min_bytes // 3), -min_bytes % 3):
        return False
    if padding and (symbols == 0 or text[symbols - 1] not in _BEFORE_PADDING[padding]):
        return False
    return any(alphabet.fullmatch(text, 0, symbols) is not None for alphabet in _SYMBOLS)


def base64_lengths(min_bytes: int, max_bytes: int) -> tuple[int, int]:
    """Bounds in characters such that padded text within them decodes to `min_bytes..max_bytes` bytes:
    4 characters per 3 bytes, the last group holding 1 to 3; a range rounds inward to whole groups."""
    if min_bytes == max_bytes:
        length = 4 * -(-min_bytes // 3)
        return length, length
    low = 0 if min_bytes == 0 else 4 * -(-(min_bytes + 2) // 3)
    return low, 4 * (max_bytes // 3)


@dataclass(frozen=True)
class Base64:
    """`Annotated[bytes, Base64(min_bytes=..., max_bytes=...)]`: bytes of that length, base64 in JSON; the
    schema states the pattern and the length in characters, and the validator refuses text that does not
    match the pattern."""

    min_bytes: int
    max_bytes: int
    description: str | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        bounds = {"min_bytes": self.min_bytes, "max_bytes": self.max_bytes}

        def padded(value: Any) -> Any:
            # Text is base64 however the model is validated (a web framework validates a parsed body as
            # Python objects); bytes are taken as they are.
            if isinstance(value, str) and not is_padded_base64(value, **bounds):
                raise ValueError(
                    f"must be padded base64 (standard or URL-safe alphabet) of {self._size} bytes"
                )
            return value

        bounded = core_schema.bytes_schema(min_length=self.min_bytes, max_length=self.max_bytes)
        return core_schema.no_info_before_validator_function(padded, bounded)

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        min_chars, max_chars = base64_lengths(self.min_bytes, self.max_bytes)
        json_schema: JsonSchemaValue = {
            "type": "string",
            "contentEncoding": "base64",
            "pattern": base64_pattern(self.min_bytes, self.max_bytes),
            "minLength": min_chars,
            "maxLength": max_chars,
        }
        if self.description is not None:
            json_schema["description"] = self.description
        return json_schema

    @property
    def _size(self) -> str:
        if self.min_bytes == self.max_bytes:
            return str(self.min_bytes)
        return f"{self.min_bytes} to {self.max_bytes}"


def close_pattern_maps(schema: JsonSchemaValue) -> None:
    """Where a map's keys have a pattern (`patternProperties`), a key that does not match it is refused by
    the validator: say so (`additionalProperties: false`, the pattern as `propertyNames`). Recurses into
    the schema in place; references are left to the models they name."""
    if isinstance(schema, dict):
        patterns = schema.get("patternProperties")
        if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in schema:
            (key_pattern,) = patterns
            schema["additionalProperties"] = False
            schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": key_pattern}
        for value in schema.values():
            close_pattern_maps(value)
    elif isinstance(schema, list):
        for item in schema:
            close_pattern_maps(item)
