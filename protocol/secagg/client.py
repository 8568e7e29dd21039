"""A hospital's side of one masking cohort: its secrets, and the rules it keeps whatever the edge asks.

The rules that carry the guarantee (each raises `SecAggError` and the hospital sends nothing):
- it joins only a roster of at least `k` hospitals, each advert signed by that hospital's enrolled
  identity, its own advert unchanged;
- it masks only with at least as many neighbours' shares as its own threshold (fewer would let the edge
  rebuild its masks from too few hospitals);
- it signs one survivor list per cohort, naming no neighbour whose shares it did not receive, and answers an unmask request only for a list that a majority
  of the roster signed and that holds at least `k` hospitals, itself included;
- for each neighbour it reveals the self-mask share (neighbour in the list) or the mask-key share
  (neighbour not in it), never both, and never for a list other than the one it signed.

State lives in memory: a hospital that restarts mid-cohort has lost its secrets and simply drops out,
which the protocol tolerates; it can then reveal nothing, which is safe.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from protocol.secagg import primitives
from protocol.secagg.cohort import Cohort, UIntArray, Verifier, pair_sign, reduce, seed_commitment
from protocol.secagg.messages import (
    CohortId,
    Consent,
    Inbox,
    KeyAdvert,
    Roster,
    ShareBundle,
    Stage,
    StageRequest,
    SurvivorSet,
    UnmaskRequest,
    UnmaskShares,
)
from protocol.secagg.primitives import SecAggError

Signer = Callable[[bytes], bytes]


class MaskingClient:
    """One hospital in one cohort. Methods are called in stage order; each checks what it receives."""

    def __init__(
        self, cohort_id: CohortId, client_id: str, *, sign: Signer, verify: Verifier, min_survivors: int
    ) -> None:
        self.cohort_id = cohort_id
        self.client_id = client_id
        self._sign = sign
        self._verify = verify
        self._min_survivors = min_survivors
        self._context = cohort_id.context()
        self._share_key = primitives.X25519PrivateKey.generate()
        self._mask_seed = primitives.new_seed()
        self._self_seed = primitives.new_seed()
        self._cohort: Cohort | None = None
        self._held: dict[str, tuple[bytes, bytes]] = {}  # sender -> (its self-seed share, its key-seed share)
        self._pair_secrets: dict[
            str, bytes
        ] = {}  # sender -> the X25519 secret its pairwise mask derives from
        self._received: Inbox | None = None  # the inbox `_held` and `_pair_secrets` come from
        self._signed: SurvivorSet | None = None

    # -- stage 1 ------------------------------------------------------------------------------------
    def advertise(self) -> KeyAdvert:
        unsigned = KeyAdvert(
            cohort=self.cohort_id,
            client_id=self.client_id,
            share_key=primitives.public_bytes(self._share_key),
            mask_key=primitives.public_bytes(primitives.mask_key(self._mask_seed, self._context)),
            seed_commitment=seed_commitment(self._self_seed, self._context),
            signature=b"",
        )
        return unsigned.model_copy(update={"signature": self._sign(unsigned.signing_payload())})

    # -- stage 2 ------------------------------------------------------------------------------------
    def share(self, roster: Roster) -> ShareBundle:
        """Check the roster, then seal Shamir shares of both seeds to each neighbour."""
        cohort = Cohort(roster, self._min_survivors)
        cohort.check(self._verify)
        mine = cohort.adverts.get(self.client_id)
        if mine is None or not self._owns(mine):
            raise SecAggError(f"the roster does not hold {self.client_id}'s own advert unchanged")
        self._cohort = cohort
        neighbours = cohort.neighbours[self.client_id]
        threshold = cohort.threshold(self.client_id)
        seed_shares = primitives.split(self._self_seed, threshold=threshold, holders=len(neighbours))
        key_shares = primitives.split(self._mask_seed, threshold=threshold, holders=len(neighbours))
        sealed = {}
        for peer, seed_share, key_share in zip(neighbours, seed_shares, key_shares, strict=True):
            secret = primitives.agree(self._share_key, cohort.adverts[peer].share_key)
            box = cohort.share_box_key(secret, self.client_id, peer)
            sealed[peer] = primitives.seal(
                box, seed_share + key_share, cohort.box_associated(self.client_id, peer)
            )
        bundle = ShareBundle(cohort=self.cohort_id, client_id=self.client_id, sealed=sealed)
        return bundle.model_copy(update={"signature": self._sign(bundle.signing_payload())})

    def _owns(self, advert: KeyAdvert) -> bool:
        """Whether `advert` carries this hospital's keys and commitment (the edge may not swap them)."""
        own = (
            primitives.public_bytes(self._share_key),
            primitives.public_bytes(primitives.mask_key(self._mask_seed, self._context)),
            seed_commitment(self._self_seed, self._context),
        )
        return (advert.share_key, advert.mask_key, advert.seed_commitment) == own

    # -- stage 3 ------------------------------------------------------------------------------------
    def receive(self, inbox: Inbox) -> None:
        """Open the neighbours' shares and keep them; raises `SecAggError` for an inbox this hospital cannot
        mask with (so that it can check one before it trains)."""
        cohort = self._require_cohort()
        if inbox.cohort != self.cohort_id or inbox.client_id != self.client_id:
            raise SecAggError("the inbox is addressed to another hospital or cohort")
        neighbours = set(cohort.neighbours[self.client_id])
        strangers = set(inbox.sealed) - neighbours
        if strangers:
            raise SecAggError(f"the inbox holds shares from non-neighbours: {sorted(strangers)}")
        threshold = cohort.threshold(self.client_id)
        if len(inbox.sealed) < threshold:
            raise SecAggError(
                f"only {len(inbox.sealed)} neighbours' shares arrived; masking needs at least {threshold}"
            )
        own_key = primitives.mask_key(self._mask_seed, self._context)
        held, pair_secrets = {}, {}
        for sender, sealed in inbox.sealed.items():
            pair_secrets[sender] = primitives.agree(own_key, cohort.adverts[sender].mask_key)
            secret = primitives.agree(self._share_key, cohort.adverts[sender].share_key)
            box = cohort.share_box_key(secret, sender, self.client_id)
            opened = primitives.open_sealed(box, sealed, cohort.box_associated(sender, self.client_id))
            if len(opened) != 2 * primitives.SEED_BYTES:
                raise SecAggError(f"{sender}'s sealed shares are {len(opened)} bytes, not 32")
            held[sender] = (opened[: primitives.SEED_BYTES], opened[primitives.SEED_BYTES :])
        self._held = held
        self._pair_secrets = pair_secrets
        self._received = inbox

    def mask(self, inbox: Inbox, residues: UIntArray, *, bits: int) -> UIntArray:
        """`receive(inbox)`, then `residues` plus the self mask and one pairwise mask per neighbour whose
        shares arrived, in `Z_(2^bits)`."""
        if inbox is not self._received:  # the agent opened it at join, before training
            self.receive(inbox)
        cohort = self._require_cohort()
        x = np.asarray(residues, dtype=np.uint64)
        if x.ndim != 1 or (bits < 64 and int(x.max(initial=0)) >> bits):
            raise SecAggError(f"residues must be a 1-D vector in [0, 2^{bits})")
        masked = x + cohort.seed_mask(self._self_seed, x.size, bits)
        for peer, secret in sorted(self._pair_secrets.items()):
            mask = cohort.pair_mask(secret, self.client_id, peer, x.size, bits)
            masked = masked + mask if pair_sign(self.client_id, peer) > 0 else masked - mask
        return reduce(masked, bits)

    # -- stage 4 ------------------------------------------------------------------------------------
    def consent(self, survivor_set: SurvivorSet) -> Consent:
        """Sign the edge's survivor list: once per cohort, only a list with this hospital and `k` in all."""
        cohort = self._require_cohort()
        cohort.check_survivors(survivor_set)
        if self.client_id not in survivor_set.survivors:
            raise SecAggError(f"the survivor list leaves out {self.client_id}, whose upload the edge holds")
        # Only senders upload, and an honest edge routes every sender's shares to every sender neighbour: a
        # listed neighbour whose shares never came is a name whose upload need not be in the sum.
        unseen = (set(survivor_set.survivors) & set(cohort.neighbours[self.client_id])) - set(self._held)
        if unseen:
            raise SecAggError(f"the survivor list names neighbours whose shares never came: {sorted(unseen)}")
        if self._signed is not None and set(self._signed.survivors) != set(survivor_set.survivors):
            raise SecAggError(f"{self.client_id} already signed another survivor list for this cohort")
        self._signed = survivor_set
        return Consent(
            cohort=self.cohort_id,
            client_id=self.client_id,
            signature=self._sign(survivor_set.signing_payload()),
        )

    # -- stage 5 ------------------------------------------------------------------------------------
    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """The shares the edge needs to remove the masks of the signed survivor list, and no others."""
        cohort = self._require_cohort()
        survivor_set = request.survivor_set
        if survivor_set.cohort != self.cohort_id:
            # Consents over another cohort's list (an earlier round's, say) sign a payload bound to it.
            raise SecAggError("the unmask request carries the survivor list of another cohort")
        if self._signed is None or set(self._signed.survivors) != set(survivor_set.survivors):
            raise SecAggError(f"{self.client_id} answers only the survivor list it signed")
        payload = survivor_set.signing_payload()
        valid = {
            member
            for member, signature in request.consents.items()
            if member in survivor_set.survivors and self._verify(member, payload, signature)
        }
        if len(valid) < cohort.majority():
            raise SecAggError(
                f"the survivor list carries {len(valid)} valid signatures; it needs a majority of the "
                f"roster, {cohort.majority()}"
            )
        survivors = set(survivor_set.survivors)
        seed_shares = {peer: shares[0] for peer, shares in self._held.items() if peer in survivors}
        key_shares = {peer: shares[1] for peer, shares in self._held.items() if peer not in survivors}
        answer = UnmaskShares(
            cohort=self.cohort_id, client_id=self.client_id, seed_shares=seed_shares, key_shares=key_shares
        )
        return answer.model_copy(update={"signature": self._sign(answer.signing_payload())})

    def request(self, stage: Stage) -> StageRequest:
        """A signed request for what `stage` produced."""
        unsigned = StageRequest(cohort=self.cohort_id, client_id=self.client_id, stage=stage)
        return unsigned.model_copy(update={"signature": self._sign(unsigned.signing_payload())})

    def _require_cohort(self) -> Cohort:
        if self._cohort is None:
            raise SecAggError(f"{self.client_id} has not seen this cohort's roster yet")
        return self._cohort
