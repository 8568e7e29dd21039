"""Wire models of the masking protocol, in the order a cohort exchanges them.

1. `KeyAdvert`: each hospital's two X25519 public keys and a commitment to its self-mask seed, signed
   with its enrolled Ed25519 identity. The edge publishes the adverts it got as the cohort's `Roster`.
2. `ShareBundle`: each hospital's Shamir shares of its self-mask seed and its mask-key seed, one sealed
   box per neighbour. The edge hands each hospital its `Inbox`: the boxes addressed to it.
3. The masked upload is an ordinary `ClientUpdate` (protocol.messages) whose ciphertext holds ring
   residues plus masks.
4. `SurvivorSet` and `Consent`: the edge names the hospitals whose uploads are in its sum; each of them
   signs that one list, once per cohort.
5. `UnmaskRequest` (the list and a majority of the roster's signatures over it) and `UnmaskShares`: for
   each neighbour, the self-mask share if it is in the list, the mask-key share if it is not; never both.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from protocol import signing
from protocol.messages import MAX_CLIENTS_PER_ROUND, Identifier, Message, Signature
from protocol.wire_schema import Base64

PublicKey = Annotated[bytes, Base64(min_bytes=32, max_bytes=32, description="X25519 raw public key")]
Digest = Annotated[bytes, Base64(min_bytes=32, max_bytes=32)]
Share = Annotated[bytes, Base64(min_bytes=16, max_bytes=16)]
Sealed = Annotated[bytes, Base64(min_bytes=28, max_bytes=256)]


class CohortId(Message):
    """Which masking cohort: one edge's hospitals in one round of one federation."""

    federation_id: Identifier
    round: int = Field(ge=0)
    edge_id: Identifier

    def context(self) -> bytes:
        """The bytes every key, mask and signature of this cohort is bound to."""
        return f"{self.federation_id}\x00{self.round}\x00{self.edge_id}".encode()


class KeyAdvert(Message):
    cohort: CohortId
    client_id: Identifier
    share_key: PublicKey  # X25519: seals the Shamir shares sent to this hospital
    mask_key: PublicKey  # X25519: agrees the pairwise masks
    seed_commitment: Digest  # SHA-256 of the self-mask seed, so a rebuilt seed can be checked
    signature: Signature

    def signing_payload(self) -> bytes:
        return signing.tagged(
            signing.SECAGG_ADVERT,
            b"\x00".join(
                [
                    self.cohort.context(),
                    self.client_id.encode(),
                    self.share_key,
                    self.mask_key,
                    self.seed_commitment,
                ]
            ),
        )


class Roster(Message):
    """The adverts an edge closed its cohort with, sorted by client id."""

    cohort: CohortId
    adverts: list[KeyAdvert] = Field(max_length=MAX_CLIENTS_PER_ROUND)


class ShareBundle(Message):
    cohort: CohortId
    client_id: Identifier
    sealed: dict[Identifier, Sealed] = Field(max_length=MAX_CLIENTS_PER_ROUND)  # neighbour -> its shares
    signature: Signature = b""

    def signing_payload(self) -> bytes:
        return _signed_fields(signing.SECAGG_SHARES, self)


class Inbox(Message):
    """The sealed shares addressed to one hospital, by sender."""

    cohort: CohortId
    client_id: Identifier
    sealed: dict[Identifier, Sealed] = Field(max_length=MAX_CLIENTS_PER_ROUND)


class SurvivorSet(Message):
    """The hospitals whose masked uploads are in the edge's sum."""

    cohort: CohortId
    survivors: list[Identifier] = Field(max_length=MAX_CLIENTS_PER_ROUND)

    def signing_payload(self) -> bytes:
        return signing.tagged(
            signing.SECAGG_SURVIVORS,
            b"\x00".join([self.cohort.context(), ",".join(sorted(self.survivors)).encode()]),
        )


class Consent(Message):
    cohort: CohortId
    client_id: Identifier
    signature: Signature  # over SurvivorSet.signing_payload()


class UnmaskRequest(Message):
    survivor_set: SurvivorSet
    consents: dict[Identifier, Signature] = Field(max_length=MAX_CLIENTS_PER_ROUND)


class UnmaskShares(Message):
    cohort: CohortId
    client_id: Identifier
    seed_shares: dict[Identifier, Share] = Field(max_length=MAX_CLIENTS_PER_ROUND)  # survivors' self masks
    key_shares: dict[Identifier, Share] = Field(max_length=MAX_CLIENTS_PER_ROUND)  # the dropped's mask keys
    signature: Signature = b""

    def signing_payload(self) -> bytes:
        return _signed_fields(signing.SECAGG_UNMASK, self)


class Stage(StrEnum):
    """What a hospital asks the edge for, once the stage before it closed."""

    ROSTER = "roster"
    INBOX = "inbox"
    SURVIVORS = "survivors"
    UNMASK_REQUEST = "unmask-request"


class StageRequest(Message):
    """A hospital's signed request for what a stage produced (only members of the round may read it)."""

    cohort: CohortId
    client_id: Identifier
    stage: Stage
    signature: Signature = b""

    def signing_payload(self) -> bytes:
        return _signed_fields(signing.SECAGG_REQUEST, self)


def _signed_fields(tag: str, message: Message) -> bytes:
    """Canonical JSON of every field but the signature, under a domain tag (`protocol.signing`)."""
    fields = message.model_dump(mode="json", exclude={"signature"})
    return signing.tagged(tag, json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
