"""What masking below the encryption costs each hospital, edge and the cloud, against today's upload path.

Today's path, measured in the same run: a hospital encodes and encrypts its update with packed Paillier
(no masking); the edge deserialises and adds its cohort's `n` uploads; the cloud decrypts and decodes the
sum. The masked path (`protocol.secagg`, Bonawitz et al. CCS 2017 with the SecAgg+ neighbour graph of
Bell et al. CCS 2020) adds, per hospital: advertise (X25519 keys, Ed25519 signature), share (roster check
with every advert's signature, Shamir splits, one X25519 agreement and one AES-GCM seal per neighbour),
mask (open the inbox, expand 1 + neighbours masks over the vector), consent and the unmask answer, and
encrypts wider slots; per edge: route the shares, compute the mask correction (Shamir combines, PRG
expansions), sum the uploads; at the cloud: add the correction in the ring before decoding.

    .venv/bin/python bench/secagg_cost.py                  # cohorts 10, 100, 1000; 150k and 1M values
    .venv/bin/python bench/secagg_cost.py --cohorts 10 --sizes 150000
    .venv/bin/python bench/secagg_cost.py --quick          # seconds: a smoke test

Figures are CPU seconds of this one-threaded process, best of several runs, so that other jobs on a
shared machine do not skew the ratios. How a full run stays within a few minutes on two cores (each
shortcut is named in the footnotes it prints):
- one hospital of each cohort is measured, with its real neighbour count, a roster of `n` real signed
  adverts and real shares from its neighbours; the other hospitals' bundles are only routed;
- Paillier encryption, deserialise-and-add and decryption run on a sample of chunks and are extrapolated
  linearly (every chunk costs the same); the edge's sum times a few uploads and multiplies by `n`;
- the edge's correction is the real `correction()` for complete-graph cohorts and, for larger ones, the
  sum of its measured terms (combines, checks, PRG expansions) counted on the real neighbour graph.
"""

from __future__ import annotations

import argparse
import functools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bench_timing import cpu_seconds
from rich.console import Console
from rich.table import Table

from protocol.aggregation import unmasked_sum
from protocol.crypto import EncryptedVector, PaillierParams, PaillierScheme, generate_scheme
from protocol.secagg import (
    Cohort,
    CohortId,
    Inbox,
    MaskingClient,
    Roster,
    ShareBundle,
    SurvivorSet,
    UnmaskRequest,
    correction,
    primitives,
    residue_bytes,
    route,
)
from protocol.secagg.cohort import FULL_GRAPH_UP_TO, ring_sum, seed_commitment
from services.identity import IdentityError, SigningKey, verify

TITLE = "fedlora masking cost"
SEED = 11
K = 3  # the cohort's minimum survivors: no step's cost depends on it
SEALED_BYTES = primitives.NONCE_BYTES + 2 * primitives.SEED_BYTES + 16  # one AES-GCM box of two shares
SUMMED_UPLOADS = 8  # uploads deserialised and added per timing of the edge's sum


# -- the cohort ------------------------------------------------------------------------------------
@dataclass
class Identities:
    """Enrolled Ed25519 identities: what the cloud's registry answers. `verify` checks every signature;
    `verify_once` remembers answers, for the hospitals that are set up but not measured."""

    ids: list[str]
    keys: dict[str, SigningKey] = field(init=False)

    def __post_init__(self) -> None:
        self.keys = {c: SigningKey.generate() for c in self.ids}
        self.verify_once = functools.lru_cache(maxsize=None)(self.verify)

    def verify(self, client_id: str, payload: bytes, signature: bytes) -> bool:
        try:
            verify(self.keys[client_id].public_bytes, payload, signature)
        except (KeyError, IdentityError):
            return False
        return True

    def clients(self, cohort_id: CohortId, measured: str | None) -> dict[str, MaskingClient]:
        return {
            c: MaskingClient(
                cohort_id,
                c,
                sign=self.keys[c].sign,
                verify=self.verify if c == measured else self.verify_once,
                min_survivors=K,
            )
            for c in self.ids
        }


@dataclass
class HospitalCost:
    """Seconds of one hospital's protocol steps that do not depend on the vector's length."""

    neighbours: int
    threshold: int
    advertise: float
    share: float
    consent_unmask: float
    route: float  # the edge's, for the whole cohort


@dataclass
class CohortRig:
    """A cohort of `n` with one measured hospital ready to mask: its inbox holds every neighbour's shares."""

    cohort: Cohort
    client: MaskingClient
    inbox: Inbox
    identities: Identities
    cost: HospitalCost


def cohort_id(round_: int) -> CohortId:
    return CohortId(federation_id="bench-secagg", round=round_, edge_id="edge-1")


def closed_cohort(
    identities: Identities, cid: CohortId, measured: str | None
) -> tuple[Roster, Cohort, dict[str, MaskingClient]]:
    clients = identities.clients(cid, measured)
    adverts = sorted((c.advertise() for c in clients.values()), key=lambda a: a.client_id)
    roster = Roster(cohort=cid, adverts=adverts)
    return roster, Cohort(roster, K), clients


def build_rig(n: int) -> CohortRig:
    identities = Identities([f"hospital-{i:04d}" for i in range(n)])
    me = identities.ids[0]
    cid = cohort_id(0)
    roster, cohort, clients = closed_cohort(identities, cid, me)
    client = clients[me]
    # Advertising: a fresh hospital's X25519 keys and seeds, then the signed advert.
    advertise = cpu_seconds(
        lambda: MaskingClient(
            cid, me, sign=identities.keys[me].sign, verify=identities.verify, min_survivors=K
        ).advertise(),
        repeat=5,
    )
    bundle: ShareBundle | None = None

    def share() -> None:
        nonlocal bundle
        bundle = client.share(roster)

    share_s = cpu_seconds(share, repeat=2)
    assert bundle is not None
    neighbours = cohort.neighbours[me]
    real = [bundle, *(clients[p].share(roster) for p in neighbours)]
    inbox = route(cohort, real)[me]
    # The edge routes every hospital's bundle; those it does not open for the measured one are random
    # bytes of the real size (routing reads only the addresses).
    sent = {b.client_id for b in real}
    filler = [
        ShareBundle(
            cohort=cid,
            client_id=m,
            sealed={p: secrets.token_bytes(SEALED_BYTES) for p in cohort.neighbours[m]},
        )
        for m in cohort.members
        if m not in sent
    ]
    route_s = cpu_seconds(lambda: route(cohort, real + filler), repeat=3)
    # Consent and unmask with every hospital surviving: the others' consents are their real signatures.
    client.mask(inbox, np.zeros(1, dtype=np.uint64), bits=8)  # holds the neighbours' shares
    survivors = SurvivorSet(cohort=cid, survivors=list(cohort.members))
    payload = survivors.signing_payload()
    consents = {c: identities.keys[c].sign(payload) for c in cohort.members}
    request = UnmaskRequest(survivor_set=survivors, consents=consents)
    consent_unmask = cpu_seconds(lambda: (client.consent(survivors), client.unmask(request)), repeat=3)
    cost = HospitalCost(len(neighbours), cohort.threshold(me), advertise, share_s, consent_unmask, route_s)
    return CohortRig(cohort, client, inbox, identities, cost)


# -- the edge's correction ---------------------------------------------------------------------------
def dropped(members: tuple[str, ...], fraction: float) -> set[str]:
    """Hospitals that drop after sharing, before uploading (their pairwise masks must be rebuilt)."""
    count = 0 if fraction == 0 else max(1, round(fraction * len(members)))
    rng = np.random.default_rng(SEED)
    return {members[i] for i in rng.choice(len(members), size=count, replace=False)}


def correction_model(rig: CohortRig, *, length: int, bits: int, drop: set[str]) -> float:
    """Seconds of `correction()` as the sum of its terms, each measured once and counted on the real
    neighbour graph: per survivor, a Shamir combine, the commitment check and one self-mask expansion;
    per dropped hospital, a combine and the key check, and one X25519 agreement and pairwise-mask
    expansion per surviving neighbour."""
    cohort = rig.cohort
    context = cohort.context
    seed = primitives.new_seed()
    t, d = rig.cost.threshold, rig.cost.neighbours
    shares = dict(enumerate(primitives.split(seed, threshold=t, holders=d)[:t], start=1))
    commitment = seed_commitment(seed, context)
    advertised = primitives.public_bytes(primitives.mask_key(seed, context))
    total = np.zeros(length, dtype=np.uint64)
    peer = primitives.public_bytes(primitives.X25519PrivateKey.generate())
    a, b = cohort.members[:2]

    def self_term() -> None:
        rebuilt = primitives.combine(shares, threshold=t)
        if seed_commitment(rebuilt, context) != commitment:
            raise AssertionError("the rebuilt seed does not match its commitment")
        np.add(total, cohort.seed_mask(rebuilt, length, bits), out=total)

    def key_term() -> None:
        rebuilt = primitives.combine(shares, threshold=t)
        if primitives.public_bytes(primitives.mask_key(rebuilt, context)) != advertised:
            raise AssertionError("the rebuilt seed does not yield its key")

    key = primitives.mask_key(seed, context)

    def pair_term() -> None:
        np.subtract(total, cohort.pair_mask(primitives.agree(key, peer), a, b, length, bits), out=total)

    alive_pairs = sum(1 for m in drop for p in cohort.neighbours[m] if p not in drop)
    survivors = len(cohort.members) - len(drop)
    return (
        survivors * cpu_seconds(self_term, repeat=5)
        + len(drop) * cpu_seconds(key_term, repeat=5)
        + alive_pairs * cpu_seconds(pair_term, repeat=5)
    )


def correction_measured(identities: Identities, *, length: int, bits: int, drop: set[str]) -> float:
    """Seconds of the real `correction()` over a whole cohort (every hospital real, `drop` leaving after
    sharing); a fresh cohort, since a hospital signs one survivor list per cohort."""
    roster, cohort, clients = closed_cohort(identities, cohort_id(1 + len(drop)), None)
    inboxes = route(cohort, [c.share(roster) for c in clients.values()])
    alive = [m for m in cohort.members if m not in drop]
    for m in alive:  # the residues' length does not matter to what the answers hold
        clients[m].mask(inboxes[m], np.zeros(1, dtype=np.uint64), bits=bits)
    survivors = SurvivorSet(cohort=cohort.cohort_id, survivors=alive)
    consents = {m: clients[m].consent(survivors).signature for m in alive}
    request = UnmaskRequest(survivor_set=survivors, consents=consents)
    answers = [clients[m].unmask(request) for m in alive]
    return cpu_seconds(
        lambda: correction(
            cohort, senders=cohort.members, survivors=alive, answers=answers, length=length, bits=bits
        ),
        repeat=2,
    )


# -- Paillier, today's and masked ------------------------------------------------------------------
@dataclass
class PaillierCost:
    """Seconds for one full vector (extrapolated from the sampled chunks) and bytes of one upload."""

    encrypt: float
    sum_per_upload: float
    decrypt: float
    upload_bytes: int
    slots: int


@dataclass
class PaillierRates:
    """Seconds per chunk, measured on a sample; `at` scales them to a vector's length."""

    scheme: PaillierScheme
    upload: EncryptedVector[Any]
    encrypt: float
    sum_per_upload: float
    decrypt: float

    def at(self, length: int) -> PaillierCost:
        chunks = -(-length // self.scheme.slots)
        tiled = EncryptedVector(  # the size is per chunk: the sampled chunks, tiled to the full length
            self.upload.kind,
            self.upload.fingerprint,
            length,
            1,
            [self.upload.payload[i % len(self.upload.payload)] for i in range(chunks)],
        )
        return PaillierCost(
            self.encrypt * chunks,
            self.sum_per_upload * chunks,
            self.decrypt * chunks,
            len(self.scheme.serialize(tiled)),
            self.scheme.slots,
        )


def paired(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Best times of `a` and `b`, run in turns so that both meet the same load on a shared machine."""
    times = [(cpu_seconds(a), cpu_seconds(b)) for _ in range(repeat)]
    return min(t for t, _ in times), min(t for _, t in times)


def summing(scheme: PaillierScheme, uploads: list[EncryptedVector[Any]]) -> Callable[[], None]:
    """`SUMMED_UPLOADS` uploads deserialised and added to the edge's running sum."""
    wires = [scheme.serialize(u) for u in uploads]
    length = uploads[0].length

    def add_all() -> None:
        acc = scheme.sum([uploads[0]])
        for i in range(SUMMED_UPLOADS):
            scheme.add_into(acc, scheme.deserialize(wires[i % len(wires)], expected_length=length))

    return add_all


def paillier_rates(
    today: PaillierScheme, masked: PaillierScheme, *, n: int, sample: int, rng: np.random.Generator
) -> tuple[PaillierRates, PaillierRates]:
    """Per chunk, today's path and the masked one: encode + encrypt; deserialise + add; at the cloud
    decrypt + decode (masked: + the cohort's correction, with the range check), for a sum of `n`."""
    bits = masked.ring_bits
    assert bits is not None
    ring = np.uint64((1 << bits) - 1)
    x = rng.uniform(-1.0, 1.0, sample * max(today.slots, masked.slots))
    xt, xm = x[: sample * today.slots], x[: sample * masked.slots]
    ups_t: list[EncryptedVector[Any]] = []
    ups_m: list[EncryptedVector[Any]] = []
    enc_t, enc_m = paired(
        lambda: ups_t.append(today.encrypt(xt)),
        lambda: ups_m.append(masked.encrypt_residues(masked.residues(xm))),
        repeat=5,
    )
    add_t, add_m = paired(summing(today, ups_t), summing(masked, ups_m), repeat=5)
    # Today: one encryption stands in for the sum of `n` (decryption does not depend on the plaintext).
    total_t = EncryptedVector(ups_t[0].kind, ups_t[0].fingerprint, xt.size, n, list(ups_t[0].payload))
    # Masked: `n` hospitals' residues plus a uniform total mask, which the correction removes.
    values = rng.uniform(-1.0, 1.0, (n, xm.size))
    plain = ring_sum((masked.residues(v) for v in values), bits, xm.size)
    noise = rng.integers(0, 1 << bits, xm.size, dtype=np.uint64)
    total_m = masked.encrypt_residues((plain + noise) & ring)
    total_m.count = n
    fix = residue_bytes((np.uint64(0) - noise) & ring, bits)
    wire_m = masked.serialize(total_m)  # read again only where the masks do not cancel
    out: list[np.ndarray] = []
    dec_t, dec_m = paired(
        lambda: today.decrypt(total_t),
        lambda: out.append(unmasked_sum(masked, total_m, [wire_m], [fix], edges=["edge-1"], k=n)),
        repeat=5,
    )
    error = float(np.max(np.abs(out[0] - values.sum(axis=0))))
    bound = masked.error_bound(count=n, max_abs=1.0)
    if error > bound:
        raise AssertionError(f"the unmasked sum is off by {error}, above the bound {bound}")
    per = 1 / sample
    return (
        PaillierRates(today, ups_t[0], enc_t * per, add_t * per / SUMMED_UPLOADS, dec_t * per),
        PaillierRates(masked, ups_m[0], enc_m * per, add_m * per / SUMMED_UPLOADS, dec_m * per),
    )


# -- one cell of the tables ------------------------------------------------------------------------
@dataclass
class Cell:
    """Every figure of one cohort size and vector length, in seconds (bytes where named)."""

    n: int
    length: int
    hospital: HospitalCost
    mask: float
    today: PaillierCost
    masked: PaillierCost
    correction: dict[float, float]
    model_check: dict[float, float] = field(default_factory=dict)  # the model where it was also measured

    @property
    def hospital_total(self) -> float:
        h = self.hospital
        return h.advertise + h.share + self.mask + self.masked.encrypt + h.consent_unmask

    @property
    def edge_today(self) -> float:
        return self.today.sum_per_upload * self.n

    def edge_total(self, drop: float) -> float:
        return self.hospital.route + self.correction[drop] + self.masked.sum_per_upload * self.n


def fmt_s(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f} s"
    if value >= 1:
        return f"{value:.3g} s"
    return f"{value * 1e3:.3g} ms"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.3g}x"


def fix_of(cell: Cell, *, drop: float) -> float:
    return cell.correction[drop]


def edge_total_of(cell: Cell, *, drop: float) -> float:
    return cell.edge_total(drop)


def hospital_today(cell: Cell) -> float:
    return cell.today.encrypt


def edge_today(cell: Cell) -> float:
    return cell.edge_today


def render(console: Console, cells: list[Cell], length: int, dropouts: list[float], sample: int) -> None:
    row_cells = sorted((c for c in cells if c.length == length), key=lambda c: c.n)
    table = Table(
        title=f"{TITLE}, {length:,} adapter values (in brackets: against today's path of the same party)"
    )
    table.add_column("party / step")
    for c in row_cells:
        table.add_column(f"n = {c.n:,}", justify="right")

    def add(name: str, value: Callable[[Cell], str]) -> None:
        table.add_row(name, *(value(c) for c in row_cells))

    def timed(name: str, secs: Callable[[Cell], float], base: Callable[[Cell], float]) -> None:
        add(name, lambda c: f"{fmt_s(secs(c))} ({fmt_ratio(secs(c) / base(c))})")

    add("neighbours (threshold)", lambda c: f"{c.hospital.neighbours} ({c.hospital.threshold})")
    add("hospital: today, encode + encrypt (a)", lambda c: fmt_s(c.today.encrypt))
    timed("  advertise: keys + signature (c)", lambda c: c.hospital.advertise, hospital_today)
    timed("  share: roster check, Shamir, X25519, AES-GCM (c)", lambda c: c.hospital.share, hospital_today)
    timed("  mask: open inbox, 1 + neighbours PRG masks (c)", lambda c: c.mask, hospital_today)
    timed("  encode + encrypt masked residues (a)", lambda c: c.masked.encrypt, hospital_today)
    timed("  consent + unmask answer (c)", lambda c: c.hospital.consent_unmask, hospital_today)
    timed("  masked total", lambda c: c.hospital_total, hospital_today)
    add(
        "  upload MB: today -> masked",
        lambda c: (
            f"{c.today.upload_bytes / 1e6:.3g} -> {c.masked.upload_bytes / 1e6:.3g} "
            f"({fmt_ratio(c.masked.upload_bytes / c.today.upload_bytes)})"
        ),
    )
    add("edge: today, deserialise + add n uploads (b)", lambda c: fmt_s(c.edge_today))
    timed("  route shares (c)", lambda c: c.hospital.route, edge_today)
    for drop in dropouts:
        timed(f"  correction, {drop:.0%} dropped (d, f)", functools.partial(fix_of, drop=drop), edge_today)
    timed(
        "  deserialise + add n masked uploads (b)",
        lambda c: c.masked.sum_per_upload * c.n,
        edge_today,
    )
    for drop in dropouts:
        timed(f"  masked total, {drop:.0%} dropped", functools.partial(edge_total_of, drop=drop), edge_today)
    add("cloud: today, decrypt + decode (a, e)", lambda c: fmt_s(c.today.decrypt))
    timed("  decrypt + correction + decode (a, e)", lambda c: c.masked.decrypt, lambda c: c.today.decrypt)
    console.print(table)


def footnotes(console: Console, cells: list[Cell], sample: int) -> None:
    checks = [
        f"n = {c.n:,}, {c.length:,} values, {d:.0%} dropped: measured {fmt_s(c.correction[d])}, "
        f"model {fmt_s(m)}"
        for c in cells
        for d, m in sorted(c.model_check.items())
    ]
    slots = sorted({(c.n, c.today.slots, c.masked.slots) for c in cells})
    console.print(
        "notes: seconds are CPU seconds of this single-threaded process, best of 2 to 5 runs (the machine is "
        "shared; on an idle core they are wall seconds);\n"
        "       Paillier 2048-bit, max_clients = max(64, n) on both paths (a sum of n uploads needs the "
        "headroom); values per chunk, today -> masked: "
        + ", ".join(f"n = {n:,}: {a} -> {b}" for n, a, b in slots)
        + ";\n"
        f"       a = Paillier encrypt and decrypt measured on {sample} chunks, extrapolated linearly to the full "
        "vector (every chunk costs the same); encode included;\n"
        f"       b = the edge's sum: {SUMMED_UPLOADS} uploads deserialised and added on the sampled chunks, per "
        "upload times n, extrapolated like a;\n"
        "       c = one hospital measured with its real neighbour count, in a roster of n real signed adverts, "
        "with real shares from its neighbours; the other hospitals' bundles are routed as random bytes of the "
        "real size (routing reads only the addresses); its unmask answer checks n real consent signatures;\n"
        f"       d = complete-graph cohorts (n <= {FULL_GRAPH_UP_TO}): the real correction() over the whole "
        "cohort; larger ones: the sum of its terms, each measured (per survivor a Shamir combine, the "
        "commitment check and a self-mask expansion; per dropped hospital a combine, the key check, and per "
        "surviving neighbour an X25519 agreement and a pairwise-mask expansion), counted on the real graph;\n"
        "       e = one encryption with count n stands in for the edge's sum (decryption does not depend on the "
        "plaintext); masked: n hospitals' residues plus a uniform total mask, unmasked with its correction "
        "by the cloud's unmasked_sum() and checked against the plaintext sum;\n"
        "       f = hospitals drop after sharing and before uploading: the edge must rebuild their pairwise masks."
    )
    for line in checks:
        console.print(f"model check: {line}")


def summary(console: Console, cells: list[Cell], dropouts: list[float]) -> None:
    def span(values: list[float]) -> str:
        return f"{min(values):.3g}-{max(values):.3g}x"

    parts = [
        f"hospital {span([c.hospital_total / c.today.encrypt for c in cells])}",
        *(f"edge {d:.0%} dropped {span([c.edge_total(d) / c.edge_today for c in cells])}" for d in dropouts),
        f"cloud {span([c.masked.decrypt / c.today.decrypt for c in cells])}",
        f"upload bytes {span([c.masked.upload_bytes / c.today.upload_bytes for c in cells])}",
    ]
    console.print("overhead of masking against today's path: " + "; ".join(parts))


def measure(
    rig: CohortRig,
    rates: tuple[PaillierRates, PaillierRates],
    *,
    length: int,
    dropouts: list[float],
    rng: np.random.Generator,
) -> Cell:
    """Every figure of one cohort and vector length, today's path and the masked one."""
    n = len(rig.cohort.members)
    today, masked = rates
    bits = masked.scheme.ring_bits
    assert bits is not None
    residues = masked.scheme.residues(rng.uniform(-1.0, 1.0, length))
    mask = cpu_seconds(lambda: rig.client.mask(rig.inbox, residues, bits=bits), repeat=5)
    drops = {d: dropped(rig.cohort.members, d) for d in dropouts}
    model = {d: correction_model(rig, length=length, bits=bits, drop=s) for d, s in drops.items()}
    real = n <= FULL_GRAPH_UP_TO
    fixes = (
        {d: correction_measured(rig.identities, length=length, bits=bits, drop=s) for d, s in drops.items()}
        if real
        else model
    )
    return Cell(n, length, rig.cost, mask, today.at(length), masked.at(length), fixes, model if real else {})


def schemes(n: int, secret: bytes) -> tuple[PaillierScheme, PaillierScheme]:
    """Today's scheme and the masked one under one key, both with room for a sum of `n` uploads."""
    room = max(64, n)
    return (
        PaillierScheme.from_secret(PaillierParams(max_clients=room), secret),
        PaillierScheme.from_secret(PaillierParams(max_clients=room, masking=True), secret),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cohorts", type=int, nargs="+", default=[10, 100, 1000], help="hospitals per cohort"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[150_000, 1_000_000], help="adapter values")
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1], help="fractions dropped")
    parser.add_argument("--paillier-chunks", type=int, default=96, help="chunks sampled for Paillier")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and samples, for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.cohorts, args.sizes, args.paillier_chunks = [4, 70], [3000], 2
    if min(args.cohorts) < max(K, 2) or min(args.sizes) < 1 or args.paillier_chunks < 1:
        parser.error(f"--cohorts must be at least {max(K, 2)}, --sizes and --paillier-chunks positive")
    if not all(0 <= d < 1 / 3 for d in args.dropouts):
        parser.error("--dropouts must lie in [0, 1/3): the protocol tolerates up to a third")

    console = Console(width=200)
    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    key = generate_scheme(PaillierParams())
    secret = key.secret_bytes()
    cells: list[Cell] = []
    for n in args.cohorts:
        rig = build_rig(n)  # the steps that do not depend on the length, measured once per cohort
        rates = paillier_rates(*schemes(n, secret), n=n, sample=args.paillier_chunks, rng=rng)
        cells += [measure(rig, rates, length=m, dropouts=args.dropouts, rng=rng) for m in args.sizes]
    for length in args.sizes:
        render(console, cells, length, args.dropouts, args.paillier_chunks)
    footnotes(console, cells, args.paillier_chunks)
    summary(console, cells, args.dropouts)
    console.print(f"total bench time {time.perf_counter() - started:.1f} s (wall), one process, one thread")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
