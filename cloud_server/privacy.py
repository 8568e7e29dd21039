"""The privacy ledger: what every closed round released, at both layers, and what it adds up to.

Central (client-level) layer: one entry per closed round with the noise that was really on the released sum
and how far one hospital could move it (`cloud_server.central_ledger`), composed by an RDP or exact (PRV)
accountant into two epsilons at `central_dp.delta`: the public one and the one against the cloud that
decrypts the sums. The entry is written in the same store transaction that publishes the round's adapter,
so the ledger and the adapters never disagree; `central_dp.epsilon_budget` caps one of the two
(`cloud_server.privacy_budget`; the plan before any round: `protocol.privacy_planning`).

Local (example-level) layer: each upload carries the hospital's accountant histories `(sigma, q, steps)`,
one for its training part (its noisy count, then DP-SGD) and one for its held-out part (its noisy count,
then noisy held-out losses), and the epsilon its own Opacus accountant gives; the ledger recomputes the
epsilon from the histories with its own RDP accountant instead of trusting the figure (the larger of the
two parts: each example is in one of them), and shows both.

Failed rounds release nothing and spend no central budget. A hospital's steps in a failed round show up in
the history it sends with its next upload.
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import lru_cache, partial

from cloud_server.central_ledger import Column, Ledger, RoundPrivacy, current_entry, entry_event
from protocol.distributions import Distribution
from protocol.messages import (
    COUNT_ENTRY,
    CentralRoundPrivacy,
    ClientPrivacy,
    ClientRoundPrivacy,
    FederationSpec,
    FederationState,
    LocalSpend,
    NoiseMechanism,
    PrivacyReport,
)
from protocol.noise import distribution_for
from protocol.privacy import Accountant, GaussianEvent, RdpAccountant, make_accountant
from protocol.privacy_planning import next_epsilon, planned_epsilon

__all__ = ["Ledger", "RoundPrivacy", "local_epsilon", "report"]


@lru_cache(maxsize=4096)
def history_epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """Epsilon of one accountant history of Gaussian releases, by the ledger's own RDP accountant."""
    accountant = RdpAccountant()
    for sigma, rate, steps in history:
        if steps > 0:
            accountant.compose(GaussianEvent(noise_multiplier=sigma, sample_rate=rate, steps=steps))
    return accountant.epsilon(delta=delta)


def local_epsilon(spend: LocalSpend) -> float:
    """A hospital's example-level epsilon: the larger of its training part's and its held-out part's (an
    example is in exactly one; parallel composition, McSherry 2009, "Privacy Integrated Queries", Thm 4)."""
    return max(
        history_epsilon(spend.history, spend.delta), history_epsilon(spend.held_out_history, spend.delta)
    )


def report(
    spec: FederationSpec,
    ledger: Ledger,
    *,
    layout_size: int,
    state: FederationState | None = None,
    reason: str | None = None,
    rounds_closed: int,
    next_round: int | None = None,
    shares_planned: int | None = None,
) -> PrivacyReport:
    """`GET /privacy`: both layers, per round and per client; the client-level layer in two columns, public
    and against the decrypting cloud. `next_round` is the round the projections are for (default: as
    many as closed, no failed round) and `shares_planned` its noise shares."""
    dp = spec.central_dp
    rounds, public, decryptor = _central_rounds(spec, ledger, layout_size=layout_size)
    upcoming = decryptor_upcoming = None
    if rounds_closed < spec.rounds:
        ahead = partial(
            next_epsilon,
            spec,
            rounds_closed=rounds_closed,
            next_round=rounds_closed if next_round is None else next_round,
            layout_size=layout_size,
        )
        if public is not None:
            upcoming = _finite(ahead(public))
        if decryptor is not None:
            decryptor_upcoming = _finite(
                ahead(decryptor, against="decrypting_cloud", shares_planned=shares_planned)
            )
    rows: dict[str, list[ClientRoundPrivacy]] = defaultdict(list)
    spends: dict[str, list[LocalSpend]] = defaultdict(list)
    for entry in ledger.rounds:
        for cid, spend in sorted(entry.local.items()):
            last = spend.history[-1] if spend.history else None
            rows[cid].append(
                ClientRoundPrivacy(
                    round=entry.round,
                    local_epsilon=_finite(local_epsilon(spend)),
                    reported_epsilon=spend.epsilon,
                    noise_multiplier=last[0] if last else None,
                    sample_rate=last[1] if last else None,
                    # DP-SGD's steps: the training part's history less the count's release.
                    steps=sum(entry[2] for entry in spend.history if tuple(entry) != COUNT_ENTRY),
                    history=spend.history,
                    held_out_history=spend.held_out_history,
                )
            )
            spends[cid].append(spend)
    clients = tuple(_client(spec, cid, rows[cid], spends[cid]) for cid in sorted(rows))
    # With distributed noise: rounds of as many shares as the last one planned (the fewest possible before).
    planned = planned_epsilon(
        spec,
        layout_size=layout_size,
        shares_planned=next((e.shares_planned for e in reversed(ledger.rounds) if e.shares_planned), None),
    )
    return PrivacyReport(
        federation_id=spec.federation_id,
        delta=dp.delta,
        central_epsilon=_finite(public.epsilon(delta=dp.delta)) if public is not None and rounds else None,
        central_budget=dp.epsilon_budget,
        central_rounds=tuple(rounds),
        clients=clients,
        accountant=dp.accountant,
        state=state,
        reason=reason,
        next_round_epsilon=upcoming,
        planned_epsilon=_finite(planned) if planned is not None else None,
        local_accountant="rdp",
        decryptor_epsilon=(
            _finite(decryptor.epsilon(delta=dp.delta)) if decryptor is not None and rounds else None
        ),
        decryptor_unbounded=decryptor is None,
        decryptor_next_round_epsilon=decryptor_upcoming,
        colluding_clients=dp.colluding_clients,
        budget_against=dp.budget_against,
    )


History = tuple[tuple[float, float, int], ...]


def extends(new: History, old: History) -> bool:
    """Whether `new` is `old` with more releases after it (its last entry's steps may have grown, as
    consecutive steps of one mechanism merge)."""
    if not old:
        return True
    cut = len(old) - 1
    if len(new) < len(old) or tuple(new[:cut]) != tuple(old[:cut]):
        return False
    return tuple(new[cut][:2]) == tuple(old[cut][:2]) and new[cut][2] >= old[cut][2]


def composed(histories: list[History]) -> tuple[History, bool]:
    """Everything a sequence of reported histories shows was released: a history that extends the one
    before it replaces it; one that does not (a state folder lost or restored from a backup, a stale line)
    adds to it, since both sets of releases happened. Also whether any did not extend."""
    spent: list[History] = []
    broken = False
    for history in histories:
        if spent and extends(history, spent[-1]):
            spent[-1] = history
        elif history:
            broken = broken or bool(spent)
            spent.append(history)
    return tuple(entry for part in spent for entry in part), broken


def _client(
    spec: FederationSpec, cid: str, rows: list[ClientRoundPrivacy], spends: list[LocalSpend]
) -> ClientPrivacy:
    """A hospital's example-level figure over every round it reported: each part's histories composed
    (`composed`), the larger part's epsilon. A history that does not extend the one before it is flagged
    (`history_regressed`) and counted beside it, never instead of it."""
    latest = spends[-1]
    train, broken_train = composed([s.history for s in spends])
    held_out, broken_held_out = composed([s.held_out_history for s in spends])
    return ClientPrivacy(
        client_id=cid,
        local_epsilon=_finite(
            max(history_epsilon(train, latest.delta), history_epsilon(held_out, latest.delta))
        ),
        reported_epsilon=latest.epsilon,
        local_budget=latest.budget or spec.local_dp.epsilon,
        local_delta=latest.delta,
        rounds=tuple(rows),
        history_regressed=broken_train or broken_held_out,
    )


def _central_rounds(
    spec: FederationSpec, ledger: Ledger, *, layout_size: int
) -> tuple[tuple[CentralRoundPrivacy, ...], Accountant | None, Accountant | None]:
    """Each closed round with both epsilons after it, and the public and decryptor accountants over all of
    them (None: unbounded)."""
    dp = spec.central_dp
    public = make_accountant(dp.accountant) if dp.noisy else None
    decryptor = make_accountant(dp.accountant) if dp.noisy and dp.distributed else None
    rounds = []
    for stored in ledger.rounds:
        entry = current_entry(spec, stored, layout_size=layout_size)
        if entry.released:
            public = _composed(spec, public, entry, layout_size=layout_size, against="public")
        decryptor = _composed(spec, decryptor, entry, layout_size=layout_size, against="decrypting_cloud")
        fields = entry.model_dump(exclude={"local", "epsilon_after"})
        distribution, step, coordinates = _counted_as(spec, entry, layout_size=layout_size)
        rounds.append(
            CentralRoundPrivacy(
                **fields,
                noise_distribution=distribution,
                lattice_step=step,
                coordinates=coordinates,
                epsilon_after=_finite(public.epsilon(delta=dp.delta)) if public is not None else None,
                decryptor_epsilon_after=(
                    _finite(decryptor.epsilon(delta=dp.delta)) if decryptor is not None else None
                ),
            )
        )
    return tuple(rounds), public, decryptor


def _counted_as(
    spec: FederationSpec, entry: RoundPrivacy, *, layout_size: int
) -> tuple[Distribution | None, float | None, int | None]:
    """What a reader needs to recompute the round's epsilon itself: the distribution the accountant counts
    (`protocol.privacy_planning.round_event`) and, for Skellam noise, the lattice's step and the coordinates
    in which it counts the noise and the sensitivities."""
    if entry.mechanism is NoiseMechanism.NONE:
        return None, None, None
    distribution = distribution_for(entry.mechanism, spec.he, distributed=entry.distributed)
    if distribution is not Distribution.SKELLAM:
        return distribution, None, None
    return distribution, spec.he.lattice_step, layout_size


def _composed(
    spec: FederationSpec,
    accountant: Accountant | None,
    entry: RoundPrivacy,
    *,
    layout_size: int,
    against: Column,
) -> Accountant | None:
    """`accountant` with `entry` composed in; None once a round leaves the epsilon unbounded."""
    if accountant is None:
        return None
    event = entry_event(spec, entry, layout_size=layout_size, against=against)
    if event is None:
        return None
    accountant.compose(event)
    return accountant


def _finite(epsilon: float) -> float | None:
    """An epsilon as the report shows it: None when nothing bounds it (the models refuse non-finite floats)."""
    return epsilon if math.isfinite(epsilon) else None
