"""Domain tags for the bytes signed with an Ed25519 identity: each signed message starts with its type's
tag and a NUL, so that a signature made over one type's bytes never verifies as another's.

A hospital signs uploads, manifest lines and masking messages with one key, and may be asked to sign bytes
someone else chose (an enrolment challenge); without a tag, bytes signed for one purpose could be presented
for another whose payload they happen to parse as. Tags hold no NUL, so the tagged forms of two types can
never be equal, whatever their bodies. Add a tag here for any new signed type (the enrolment challenge uses
`tagged` with its own).
"""

from __future__ import annotations

UPLOAD = "fedlora/upload/v1"
CONTRIBUTION = "fedlora/contribution/v1"
AGGREGATE = "fedlora/aggregate/v1"
PLAN = "fedlora/plan/v1"
SECAGG_ADVERT = "fedlora/secagg/advert/v1"
SECAGG_SHARES = "fedlora/secagg/shares/v1"
SECAGG_SURVIVORS = "fedlora/secagg/survivors/v1"
SECAGG_UNMASK = "fedlora/secagg/unmask/v1"
SECAGG_REQUEST = "fedlora/secagg/request/v1"


def tagged(tag: str, body: bytes) -> bytes:
    """`body` as a message of type `tag` signs it: the tag's ASCII bytes, a NUL, then `body`."""
    raw = tag.encode("ascii")
    if not raw or b"\x00" in raw:
        raise ValueError(f"a signing tag is non-empty ASCII without NUL, got {tag!r}")
    return raw + b"\x00" + body
