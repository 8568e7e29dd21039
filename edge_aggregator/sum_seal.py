"""The MAC that binds a round's running sum to the checkpoint naming its uploads, under a key only the edge
holds.

The running sum and its checkpoint (`FoldCheckpoint`) live in the edge's Redis, which a neighbour with write
access to the edge's keys (no edge key file) can roll back or rewrite: an older sum written back would be
forwarded short of uploads the edge acknowledged, and a checkpoint naming an upload its sum does not hold
would leave that upload out for good. Each checkpoint carries an HMAC-SHA256 (RFC 2104) over the edge, the
federation, the round and origin of its sum, the clients it covers, its epoch and the SHA-256 of the sum it
was written with; the folder checks it, and the sum's digest, whenever it reads them back, and a mismatch is
quarantined like a record that does not read back (the round's stored uploads are summed again, none
dropped).

The key is derived with HKDF-SHA256 (RFC 5869) from the edge's Ed25519 private key (the key file, never in
Redis): a restart of the edge derives the same key and verifies its own checkpoints, and replicas of one
edge, which share the key file (docs/operations.md), share it too. Whoever holds the key file can forge
checkpoints, as it can sign aggregates: the MAC protects against the store, not against the edge itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.identity import SigningKey

#: HKDF's `info`: what the derived key is for, so that it is never the key of anything else.
_PURPOSE = b"fedlora edge fold checkpoint mac v1"
KEY_BYTES = 32


class SumSeal:
    """Tags and verifies an edge's fold checkpoints (module docstring)."""

    def __init__(self, key: bytes, *, edge_id: str, federation_id: str) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a checkpoint MAC key is {KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        self._eid = edge_id
        self._fid = federation_id

    @classmethod
    def derive(cls, signing_key: SigningKey, *, edge_id: str, federation_id: str) -> SumSeal:
        """The seal of edge `edge_id`'s checkpoints for `federation_id`, keyed from its private key."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_PURPOSE)
        return cls(hkdf.derive(signing_key.private_bytes()), edge_id=edge_id, federation_id=federation_id)

    def tag(
        self, *, round_: int, origin: int, covers: Sequence[str], epoch: str, sum_sha256: str | None
    ) -> str:
        """The hex MAC of a checkpoint of round `round_`'s sum for `origin`."""
        mac = HMAC(self._key, hashes.SHA256())
        mac.update(self._message(round_, origin, covers, epoch, sum_sha256))
        return mac.finalize().hex()

    def verify(
        self,
        tag: str,
        *,
        round_: int,
        origin: int,
        covers: Sequence[str],
        epoch: str,
        sum_sha256: str | None,
    ) -> bool:
        """Whether `tag` is this edge's MAC of that checkpoint (compared in constant time)."""
        try:
            expected = bytes.fromhex(tag)
        except ValueError:
            return False
        mac = HMAC(self._key, hashes.SHA256())
        mac.update(self._message(round_, origin, covers, epoch, sum_sha256))
        try:
            mac.verify(expected)
        except InvalidSignature:
            return False
        return True

    def _message(
        self, round_: int, origin: int, covers: Sequence[str], epoch: str, sum_sha256: str | None
    ) -> bytes:
        fields = {
            "edge_id": self._eid,
            "federation_id": self._fid,
            "round": round_,
            "origin": origin,
            "covers": sorted(covers),
            "epoch": epoch,
            "sum_sha256": sum_sha256,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
