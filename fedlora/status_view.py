"""What `fedlora status` shows, read once or again and again (`--watch`): a snapshot of the cloud's admin
API, and the rich tables built from it. Fetching and drawing are apart, so the tables are the same in both
modes and a test can draw a snapshot of a real cloud.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType
from rich.table import Table

if TYPE_CHECKING:
    import httpx

    from protocol.messages import (
        AdapterVersion,
        ClientInfo,
        DropReason,
        FederationInfo,
        PrivacyReport,
        RoundStatus,
    )

#: Rounds a snapshot reads per federation (the API's default page).
ROUNDS_SHOWN = 50


class StatusError(RuntimeError):
    """The cloud could not be read: unreachable, or it refused a request (the message says which)."""


@dataclass(frozen=True)
class FederationStatus:
    info: FederationInfo
    rounds: tuple[RoundStatus, ...]  # newest first
    clients: tuple[ClientInfo, ...]
    versions: tuple[AdapterVersion, ...]
    privacy: PrivacyReport | None

    @property
    def current(self) -> RoundStatus | None:
        """The federation's current round, or its last one once it has ended."""
        found = [r for r in self.rounds if r.round == self.info.current_round]
        return found[0] if found else (self.rounds[0] if self.rounds else None)


@dataclass(frozen=True)
class StatusSnapshot:
    federations: tuple[FederationInfo, ...]
    details: tuple[FederationStatus, ...]  # the federations shown in full


async def fetch_status(http: httpx.AsyncClient, *, federation: str | None = None) -> StatusSnapshot:
    """Read the federations and, for each one shown (`federation`, or all), its rounds, clients, adapter
    versions with their evaluations, and privacy ledger. `http` carries the admin token."""
    import httpx

    from protocol.messages import AdapterVersion, ClientInfo, FederationInfo, PrivacyReport, RoundStatus

    async def get(path: str) -> httpx.Response:
        try:
            return await http.get(path)
        except httpx.TransportError as e:
            raise StatusError(f"cannot reach the cloud at {http.base_url}: {e}") from e

    async def read(path: str) -> Any:
        response = await get(path)
        if response.status_code != 200:
            raise StatusError(f"GET {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    infos = tuple(FederationInfo.model_validate(f) for f in await read("/federations"))
    if federation is not None and federation not in {i.spec.federation_id for i in infos}:
        raise StatusError(f"the cloud holds no federation {federation!r}")
    details = []
    for info in infos:
        fid = info.spec.federation_id
        if federation is not None and fid != federation:
            continue
        rounds = await read(f"/federations/{fid}/rounds?limit={ROUNDS_SHOWN}")
        clients = await read(f"/federations/{fid}/clients")
        versions = await read(f"/federations/{fid}/adapters")
        privacy = await get(f"/federations/{fid}/privacy")
        details.append(
            FederationStatus(
                info=info,
                rounds=tuple(RoundStatus.model_validate(r) for r in rounds),
                clients=tuple(ClientInfo.model_validate(c) for c in clients),
                versions=tuple(AdapterVersion.model_validate(v) for v in versions),
                privacy=PrivacyReport.model_validate_json(privacy.content)
                if privacy.status_code == 200
                else None,
            )
        )
    return StatusSnapshot(federations=infos, details=tuple(details))


def _num(value: float | None, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


def status_tables(snapshot: StatusSnapshot) -> list[RenderableType]:
    """Federations; then per federation shown: the current round per edge, the rounds (accuracy from the
    adapter versions' evaluations: version v is the adapter after round v - 1), clients and privacy."""
    parts: list[RenderableType] = [federations_table(snapshot.federations)]
    for fed in snapshot.details:
        parts += [edge_table(fed), rounds_table(fed), clients_table(fed)]
        if fed.privacy is not None:
            parts += privacy_tables(fed.privacy)
    return parts


def federations_table(infos: Iterable[FederationInfo]) -> Table:
    table = Table(title="federations")
    for column in ("id", "state", "round", "adapter", "strategy", "encryption", "rounds", "reason"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.spec.federation_id,
            info.state.value,
            str(info.current_round) if info.current_round is not None else "",
            str(info.adapter_version),
            info.spec.strategy.value,
            info.spec.he.kind.value,
            str(info.spec.rounds),
            info.reason or "",
        )
    return table


def edge_table(fed: FederationStatus) -> Table:
    fid, current = fed.info.spec.federation_id, fed.current
    title = f"{fid}: no round yet"
    if current is not None:
        title = f"{fid}: round {current.round} ({current.state.value}) per edge"
    table = Table(title=title)
    for column in ("edge", "uploads", "refused", "forwarded", "bytes"):
        table.add_column(column, justify="left" if column == "edge" else "right")
    for edge in current.edges if current is not None else ():
        table.add_row(
            edge.edge_id,
            f"{edge.uploads_accepted}/{edge.expected_clients}",
            str(edge.uploads_refused),
            "yes" if edge.forwarded else "no",
            f"{edge.bytes_received:,}",
        )
    return table


def rounds_table(fed: FederationStatus) -> Table:
    evaluations = {v.version: v.evaluation for v in fed.versions if v.evaluation is not None}
    table = Table(title=f"{fed.info.spec.federation_id}: rounds")
    for column in (
        "round",
        "state",
        "clients",
        "weight",
        "update norm",
        "adapter",
        "accuracy",
        "val loss",
        "seconds",
        "stop reason / failure",
    ):
        table.add_column(column, justify="left" if column.startswith("stop") else "right")
    for r in fed.rounds:
        evaluation = evaluations.get(r.adapter_version_out) if r.adapter_version_out is not None else None
        seconds = (r.closed_at - r.opened_at).total_seconds() if r.closed_at else None
        table.add_row(
            str(r.round),
            r.state.value,
            str(r.clients_contributed),
            f"{r.total_weight:g}",
            _num(r.update_norm, ".4f"),
            str(r.adapter_version_out) if r.adapter_version_out is not None else "",
            _num(evaluation.metrics.get("accuracy")) if evaluation is not None else "",
            _num(r.metrics.get("validation_loss"), ".4f"),
            _num(seconds, ".0f"),
            "; ".join(filter(None, (r.stop_reason, r.failure, _dropped(r.uploads_dropped)))),
        )
    return table


def _dropped(counts: Mapping[DropReason, int]) -> str:
    """The uploads a round's aggregates held that reach no model, by reason ("2 dropped: round_failed")."""
    return ", ".join(f"{n} dropped: {reason.value}" for reason, n in sorted(counts.items()))


def clients_table(fed: FederationStatus) -> Table:
    table = Table(title=f"{fed.info.spec.federation_id}: clients")
    for column in ("client", "edge", "rank", "examples", "rounds", "local epsilon", "last seen"):
        table.add_column(column)
    for c in fed.clients:
        table.add_row(
            c.client_id,
            c.edge_id,
            str(c.rank),
            str(c.num_examples),
            str(c.rounds_contributed),
            _num(c.local_epsilon, ".2f"),
            _time(c.last_seen),
        )
    return table


def privacy_tables(report: PrivacyReport) -> list[Table | str]:
    """The privacy ledger as two tables (client-level per round, example-level per hospital) and a summary:
    the client-level epsilon in two columns, public and against the cloud that decrypts the sums."""
    fid = report.federation_id
    # The noise as a phrase in the title (one column fewer, so that the table fits 80 columns); the realised
    # and decryptor multipliers behind each epsilon are in `GET /privacy`.
    kinds = sorted({r.mechanism.value + (" shares" if r.distributed else "") for r in report.central_rounds})
    central = Table(
        title=f"{fid}: client-level privacy per round ({', '.join(kinds) or 'no rounds'}; delta "
        f"{report.delta:g}, {report.accountant})"
    )
    for column in ("round", "z", "sensitivity", "shares", "top-up std", "epsilon", "vs cloud"):
        central.add_column(column, justify="right")
    for r in report.central_rounds:
        shares = f"{r.shares_arrived}/{r.shares_planned}" if r.shares_arrived is not None else ""
        central.add_row(
            str(r.round),
            _num(r.noise_multiplier),
            _num(r.sensitivity, ".4f"),
            shares,
            _num(r.top_up_std, ".3g"),
            _num(r.epsilon_after) if r.epsilon_after is not None else "inf",
            _num(r.decryptor_epsilon_after) if r.decryptor_epsilon_after is not None else "unbounded",
        )
    local = Table(title=f"{fid}: example-level privacy per hospital ({report.local_accountant})")
    for column in ("hospital", "rounds", "steps", "sigma", "q", "epsilon", "reported", "budget"):
        local.add_column(column, justify="right")
    for c in report.clients:
        last = c.rounds[-1] if c.rounds else None
        local.add_row(
            c.client_id,
            str(len(c.rounds)),
            str(last.steps) if last and last.steps is not None else "",
            _num(last.noise_multiplier if last else None),
            _num(last.sample_rate if last else None, ".4f"),
            _num(c.local_epsilon),
            _num(c.reported_epsilon),
            _num(c.local_budget, "g"),
        )
    return [central, local, _summary(report)]


def _summary(report: PrivacyReport) -> str:
    """What the client-level figures add up to, the budget beside the figure it caps, and why it stopped."""
    budget = f" of budget {report.central_budget:g}" if report.central_budget is not None else ""
    if report.central_epsilon is None:
        line = "client-level epsilon: no central noise, so no client-level guarantee"
    else:
        line = f"client-level epsilon {report.central_epsilon:.3f}"
        if report.budget_against == "public":
            line += budget
    if report.next_round_epsilon is not None:
        line += f"; next round would bring it to {report.next_round_epsilon:.3f}"
    if report.planned_epsilon is not None:
        line += f"; all planned rounds: {report.planned_epsilon:.3f}"
    colluding = f" and {report.colluding_clients} colluding hospitals" if report.colluding_clients else ""
    cloud = f"\nagainst the decrypting cloud{colluding}: "
    if report.decryptor_unbounded:
        cloud += "no client-level guarantee (it sees a sum without noise it does not know)"
    elif report.decryptor_epsilon is None:
        cloud += "no round yet"
    else:
        cloud += f"epsilon {report.decryptor_epsilon:.3f}"
        if report.budget_against == "decrypting_cloud":
            cloud += budget
        if report.decryptor_next_round_epsilon is not None:
            cloud += f"; next round as planned would bring it to {report.decryptor_next_round_epsilon:.3f}"
    line += cloud
    if report.state is not None and report.state.value == "budget_exhausted":
        line += f"\n[yellow]stopped: {report.reason}[/yellow]"
    return line
