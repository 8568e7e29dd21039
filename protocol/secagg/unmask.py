"""The edge's side of a cohort, as pure functions over the messages it collected: route the sealed shares,
then turn the survivors' answers into the one correction that removes every mask from the cohort's sum.

The edge learns the self-mask seeds of the survivors and the mask-key seeds of the hospitals that
dropped after sharing; with those it can remove masks from the whole survivors' sum only. It never
sees a plaintext: the sum it corrects is encrypted, and the correction travels to the cloud beside it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np

from protocol.secagg import primitives
from protocol.secagg.cohort import Cohort, UIntArray, pair_sign, reduce, seed_commitment
from protocol.secagg.messages import Inbox, ShareBundle, UnmaskShares
from protocol.secagg.primitives import SecAggError

#: Subsets of shares tried, beyond the first, when a rebuilt seed fails its check (a hospital sent a bad
#: share): bounded, so that a flood of bad shares costs the edge little and fails the cohort.
MAX_REBUILD_ATTEMPTS = 256


def route(cohort: Cohort, bundles: Iterable[ShareBundle]) -> dict[str, Inbox]:
    """Each sender's inbox: the sealed shares its neighbours addressed to it. Only hospitals that sent
    their own shares get one, and only from other senders, so every pair of masks is agreed both ways."""
    senders: dict[str, ShareBundle] = {}
    for bundle in bundles:
        if bundle.cohort != cohort.cohort_id:
            raise SecAggError(f"{bundle.client_id}'s shares are for another cohort")
        if bundle.client_id not in cohort.adverts:
            raise SecAggError(f"{bundle.client_id} sent shares but is not in the roster")
        if set(bundle.sealed) != set(cohort.neighbours[bundle.client_id]):
            raise SecAggError(f"{bundle.client_id}'s shares are not addressed to exactly its neighbours")
        senders[bundle.client_id] = bundle
    return {
        recipient: Inbox(
            cohort=cohort.cohort_id,
            client_id=recipient,
            sealed={
                sender: senders[sender].sealed[recipient]
                for sender in cohort.neighbours[recipient]
                if sender in senders
            },
        )
        for recipient in senders
    }


def correction(
    cohort: Cohort,
    *,
    senders: Iterable[str],
    survivors: Iterable[str],
    answers: Iterable[UnmaskShares],
    length: int,
    bits: int,
) -> UIntArray:
    """The residues to add (in `Z_(2^bits)`) to the decrypted sum of the survivors' masked uploads to get
    the sum of their unmasked residues.

    `senders` are the hospitals whose shares were routed (every survivor is one); `answers` come from
    survivors. Raises `SecAggError` naming the hospital whose seed cannot be rebuilt (too few answers, or
    shares that do not match what it committed to)."""
    sent = set(senders)
    alive = set(survivors)
    if not alive <= sent:
        raise SecAggError(f"survivors that never sent shares: {sorted(alive - sent)}")
    seed_shares: dict[str, dict[int, bytes]] = {m: {} for m in alive}
    key_shares: dict[str, dict[int, bytes]] = {m: {} for m in sent - alive}
    for answer in answers:
        holder = answer.client_id
        if answer.cohort != cohort.cohort_id or holder not in alive:
            raise SecAggError(f"an unmask answer from {holder}, who is not a survivor of this cohort")
        _collect(cohort, holder, answer.seed_shares, seed_shares, wanted=alive)
        _collect(cohort, holder, answer.key_shares, key_shares, wanted=sent - alive)

    total = np.zeros(length, dtype=np.uint64)
    for owner in sorted(alive):
        seed = _rebuild(cohort, owner, seed_shares[owner], _commits_to(cohort, owner), "self-mask seed")
        total += cohort.seed_mask(seed, length, bits)
    for dropped in sorted(sent - alive):
        seed = _rebuild(
            cohort, dropped, key_shares[dropped], _derives_key_of(cohort, dropped), "mask-key seed"
        )
        key = primitives.mask_key(seed, cohort.context)
        for peer in cohort.neighbours[dropped]:
            if peer not in alive:
                continue
            mask = cohort.pair_mask(
                primitives.agree(key, cohort.adverts[peer].mask_key), peer, dropped, length, bits
            )
            # The survivor added sign(peer, dropped) * mask; the dropped hospital's half never arrived.
            total = total + mask if pair_sign(peer, dropped) > 0 else total - mask
    return reduce(np.uint64(0) - total, bits)


def _commits_to(cohort: Cohort, owner: str) -> Callable[[bytes], bool]:
    """Whether a rebuilt self-mask seed is the one `owner` committed to in its advert."""
    commitment = cohort.adverts[owner].seed_commitment
    return lambda seed: seed_commitment(seed, cohort.context) == commitment


def _derives_key_of(cohort: Cohort, owner: str) -> Callable[[bytes], bool]:
    """Whether a rebuilt mask-key seed yields the mask key `owner` advertised."""
    advertised = cohort.adverts[owner].mask_key
    return lambda seed: primitives.public_bytes(primitives.mask_key(seed, cohort.context)) == advertised


def _collect(
    cohort: Cohort,
    holder: str,
    given: Mapping[str, bytes],
    into: dict[str, dict[int, bytes]],
    *,
    wanted: set[str],
) -> None:
    for owner, share in given.items():
        if owner not in wanted:
            raise SecAggError(f"{holder} revealed a share of {owner}, which this unmasking does not ask for")
        if holder not in cohort.neighbours.get(owner, ()):
            raise SecAggError(f"{holder} revealed a share of {owner} but is not its neighbour")
        into[owner][cohort.holder_index(owner, holder)] = share


def _rebuild(
    cohort: Cohort, owner: str, shares: dict[int, bytes], check: Callable[[bytes], bool], what: str
) -> bytes:
    threshold = cohort.threshold(owner)
    if len(shares) < threshold:
        raise SecAggError(
            f"{owner}'s {what} needs {threshold} shares; {len(shares)} of its neighbours answered"
        )
    for chosen in itertools.islice(_subsets(sorted(shares), threshold), MAX_REBUILD_ATTEMPTS + 1):
        seed = primitives.combine({i: shares[i] for i in chosen}, threshold=threshold)
        if check(seed):
            return seed
    raise SecAggError(f"{owner}'s {what} does not rebuild from the shares its neighbours revealed")


def _subsets(holders: list[int], threshold: int) -> Iterator[tuple[int, ...]]:
    """Every subset of `threshold` holders once, those that leave out fewer holders first: the lowest
    `threshold` of the holders not left out, for every set left out. So one bad share costs at most
    `len(holders)` tries wherever its holder sorts (in lexicographic order, a bad share of holder 1 is in
    the first C(len - 1, threshold - 1) subsets)."""
    seen: set[tuple[int, ...]] = set()
    for left_out in range(len(holders) - threshold + 1):
        for excluded in itertools.combinations(holders, left_out):
            chosen = tuple(h for h in holders if h not in excluded)[:threshold]
            if chosen not in seen:
                seen.add(chosen)
                yield chosen
