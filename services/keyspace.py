"""Every state-store key and TTL in one place (as arq keeps its Redis keys), so no two modules disagree.

Cloud keys start with `cloud:`, edge keys with `edge:{edge_id}:`; both then name the federation. The tiers'
Redis users are confined to these prefixes (`fedlora.store_users`): a key of a tier outside its prefix is
refused by Redis (NOPERM). Nothing uses pub/sub channels.
"""

from __future__ import annotations

# Replays are refused for as long as a nonce could be replayed into any open round.
NONCE_TTL_S = 7 * 24 * 3600
# An edge forgets a round's sum and manifest this long after forwarding it (kept for audits and retries).
EDGE_ROUND_TTL_S = 30 * 24 * 3600


#: The prefix of every cloud key: the cloud's Redis user may touch these and nothing else.
CLOUD_PREFIX = "cloud:"
# `limits`' rate windows of the cloud's callers (services.limits), inside the cloud's ACL key pattern; each
# window's key expires with it.
CLOUD_LIMITS_PREFIX = "cloud:limits"


def edge_prefix(eid: str) -> str:
    """The prefix of every key of edge `eid` (its replicas share them): its Redis user's only keys."""
    return f"edge:{eid}:"


# -- cloud ---------------------------------------------------------------------------------------------
def federations() -> str:
    return "cloud:federations"  # hash: federation id -> created-at


def fed_spec(fid: str) -> str:
    return f"cloud:{fid}:spec"


def fed_state(fid: str) -> str:
    return f"cloud:{fid}:state"  # json: state, current round, adapter version, enrolment token digests


def fed_public(fid: str) -> str:
    return f"cloud:{fid}:he:public"


def fed_secret(fid: str) -> str:
    return f"cloud:{fid}:he:secret-sealed"


def fed_plan_key(fid: str) -> str:
    """The federation's plan-signing Ed25519 key, sealed under the KEK (like `fed_secret`)."""
    return f"cloud:{fid}:plan-key-sealed"


def fed_tokens(fid: str) -> str:
    return f"cloud:{fid}:tokens"  # hash: sha256(token) -> json {role, subject}


def fed_edges(fid: str) -> str:
    return f"cloud:{fid}:edges"  # hash: edge id -> EdgeInfo json


def fed_edge_clocks(fid: str) -> str:
    return f"cloud:{fid}:edge_clocks"  # hash: edge id -> EdgeClock json (the offset it last reported)


def fed_clients(fid: str) -> str:
    return f"cloud:{fid}:clients"  # hash: client id -> ClientInfo json


def fed_round_plan(fid: str, round_: int) -> str:
    return f"cloud:{fid}:round:{round_}:plan"


def fed_round_status(fid: str, round_: int) -> str:
    return f"cloud:{fid}:round:{round_}:status"


def fed_round_aggregates(fid: str, round_: int) -> str:
    return f"cloud:{fid}:round:{round_}:aggregates"  # hash: edge id -> EdgeAggregate json (HSETNX)


def fed_ciphertext(fid: str, sha256: str) -> str:
    # Written once with the aggregate that carried the ciphertext, never expires: a ciphertext is accepted
    # once per federation, across rounds, late buckets and edges. Json: where it was accepted.
    return f"cloud:{fid}:ciphertext:{sha256}"


def fed_round_counted(fid: str, round_: int) -> str:
    # Json {client id: edge id}: the hospitals whose update for `round_` is inside an accepted sum (that
    # round's own or a later round's late bucket), written with the aggregate: one sum per hospital and round.
    return f"cloud:{fid}:round:{round_}:counted"


def fed_basis(fid: str, version: int) -> str:
    """A re-based basis: every module's `A_max`, float32 (`protocol.ffa.basis_bytes`), written once."""
    return f"cloud:{fid}:basis:{version}"


def fed_adapter(fid: str, version: int) -> str:
    return f"cloud:{fid}:adapter:{version}"  # float32 little-endian global vector


def fed_adapter_meta(fid: str, version: int) -> str:
    return f"cloud:{fid}:adapter:{version}:meta"  # json: the round that made it, its update norm


def fed_adapter_evaluation(fid: str, version: int) -> str:
    # AdapterEvaluation json, the latest recorded (admin PUT); beside the meta, which closing writes once.
    return f"cloud:{fid}:adapter:{version}:evaluation"


def fed_subject_token(fid: str, role: str, subject: str) -> str:
    return f"cloud:{fid}:token:{role}:{subject}"  # sha256 of the one live API token of an edge or client


def fed_enrolment_tokens(fid: str) -> str:
    # hash: sha256 of a single-use enrolment token -> EnrolmentTokenInfo json (its role, id, expiry, use)
    return f"cloud:{fid}:enrolment-tokens"


def fed_enrolment_challenge(fid: str, nonce: str) -> str:
    return (
        f"cloud:{fid}:enrolment-challenge:{nonce}"  # b"1" once an enrolment used the nonce, until it expires
    )


def fed_enrolment_challenge_key(fid: str) -> str:
    return f"cloud:{fid}:enrolment-challenge-key"  # the HMAC key the federation's challenge nonces carry


def fed_enrolled_count(fid: str, role: str) -> str:
    # the edges or clients enrolled: written in every new enrolment's transaction, so the cap holds atomically
    return f"cloud:{fid}:enrolled:{role}"


def fed_client_stats(fid: str, client_id: str) -> str:
    return f"cloud:{fid}:client:{client_id}:stats"  # json: rounds contributed, last seen, local epsilon


def fed_privacy(fid: str) -> str:
    return (
        f"cloud:{fid}:privacy"  # json: the privacy ledger, one entry per closed round (cloud_server.privacy)
    )


def fed_ranks(fid: str) -> str:
    return f"cloud:{fid}:ranks"  # json: {client id: current rank} once the rank policy changed one


def fed_validation(fid: str) -> str:
    return f"cloud:{fid}:validation"  # json: [[round, validation loss], ...] of the closed rounds


def fed_round_closing(fid: str, round_: int) -> str:
    # The closing lease (services.lease): a holder's random token, SET NX with a TTL, renewed while it
    # decrypts, deleted only by its holder; the commit writes nothing unless the key still holds its token.
    return f"cloud:{fid}:round:{round_}:closing"


def fed_round_close_failures(fid: str, round_: int) -> str:
    # Json `cloud_server.close_attempts.CloseFailures`: how many attempts to close the round failed, when the
    # last did and with which error (the back-off, and the round's failure after the last allowed attempt).
    return f"cloud:{fid}:round:{round_}:close-failures"


def fed_round_sealed(fid: str, round_: int) -> str:
    # Written once, before anyone reads the round's aggregates to close or fail it: from then on no edge sum
    # is stored into the round (`receive` refuses it, 409), so what the closer reads is what it commits.
    return f"cloud:{fid}:round:{round_}:sealed"


def fed_quarantine(fid: str, what: str) -> str:
    # A stored record that no longer validates, moved aside (`what` says which: `round:N:aggregate:EDGE`)
    # so that the round it belongs to can end; logged with the key it came from and the validation error.
    return f"cloud:{fid}:quarantine:{what}"


def fed_quarantine_prefix(fid: str) -> str:
    """Prefix of every quarantined record of the federation (`fed_quarantine`, `quarantine_of`)."""
    return f"cloud:{fid}:quarantine:"


def fed_round_aggregate_digests(fid: str, round_: int) -> str:
    # Json {edge id: sha256 of its stored value in `fed_round_aggregates`}, written in the same atomic step
    # as the value: a transaction reads which sums a round holds here (a hash cannot be read in one).
    return f"cloud:{fid}:round:{round_}:aggregate-digests"


def fed_round_forwards(fid: str, round_: int) -> str:
    # Json {edge id: `records.ForwardMark`}: each edge sum the round took, by idempotency key and ciphertext
    # digest, written in the same atomic step as the sum and never pruned (audit trail), so that the cloud
    # knows a retried forward of a sum it counted after the sum itself expired.
    return f"cloud:{fid}:round:{round_}:forwards"


def fed_round_noise(fid: str, round_: int) -> str:
    # The round's central noise (integers in lattice steps, from the exact CSPRNG sampler), sealed under the
    # KEK and written once (SET NX) before the first decryption: a closer that dies and the one that
    # finishes add the same noise, so a restart never yields a second noisy view of the same sum. Replaced
    # only when a closer asks for other noise (an edge's sum left out); deleted when the round commits.
    return f"cloud:{fid}:round:{round_}:noise"


def fed_rounds_prefix(fid: str) -> str:
    """The prefix of every per-round key of `fid` (`fed_round_noise` among them)."""
    return f"cloud:{fid}:round:"


# The closing lease's default TTL (`CloudSettings.close_lease_ttl_s`): its holder renews it every third of it
# while it works; if the holder dies, the round is closed by the next deadline check after it lapses.
ROUND_CLOSE_LEASE_TTL_S = 120.0


# -- edge ----------------------------------------------------------------------------------------------
# The folder's lease TTL: it renews it every third of it while it adds; a folder killed mid-batch is
# succeeded once it lapses, from the last checkpoint.
EDGE_FOLD_LEASE_TTL_S = 30.0


def edge_sum(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:sum"


def edge_manifest(eid: str, fid: str, round_: int) -> str:
    # One JSON object {client id: Contribution}, not a hash: it is written in the same transaction as the
    # sum and the nonce (`StateStore.transaction` works on plain keys).
    return f"edge:{eid}:{fid}:round:{round_}:manifest"


def edge_upload(eid: str, fid: str, round_: int, client_id: str) -> str:
    # One hospital's ciphertext as it was accepted: stored before the upload is acknowledged, added to the
    # round's sum by the folder, and kept until the forward has an outcome: the sum can be rebuilt without a
    # hospital the cloud refuses it with (counted at another edge).
    return f"edge:{eid}:{fid}:round:{round_}:upload:{client_id}"


def edge_uploads_prefix(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:upload:"


def edge_folded(eid: str, fid: str, round_: int) -> str:
    # json `FoldCheckpoint`: the clients whose uploads the round's `edge_sum` holds (the folder's checkpoint,
    # written with the sum): the manifest's other clients are accepted and not yet added.
    return f"edge:{eid}:{fid}:round:{round_}:folded"


def edge_fold_lease(eid: str, fid: str, round_: int, origin: int) -> str:
    """The lease of the one folder (`services.lease`) that adds round `round_`'s stored uploads made for
    `origin` (its own when `origin` == `round_`, else its bucket of late ones) into their sum."""
    return f"edge:{eid}:{fid}:round:{round_}:folding:{origin}"


def edge_forwarded(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:forwarded"  # json: the forward's outcome, written once


def edge_late_sum(eid: str, fid: str, round_: int, origin: int) -> str:
    """The running sum of uploads made for round `origin` that arrived while `round_` was open here."""
    return f"edge:{eid}:{fid}:round:{round_}:late:{origin}:sum"


def edge_late_manifest(eid: str, fid: str, round_: int, origin: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:late:{origin}:manifest"


def edge_late_folded(eid: str, fid: str, round_: int, origin: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:late:{origin}:folded"


def edge_late_upload(eid: str, fid: str, round_: int, origin: int, client_id: str) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:late:{origin}:upload:{client_id}"


def edge_late_prefix(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:late:"


def edge_rounds_prefix(eid: str, fid: str) -> str:
    """Prefix of every per-round edge key (for `scan`)."""
    return f"edge:{eid}:{fid}:round:"


def edge_plan(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:plan"  # RoundPlan json, as the edge adopted it


def edge_closed(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:closed"  # json, SET NX: no upload joins the sum after it


def edge_bytes(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:bytes"  # counter: ciphertext bytes accepted


def edge_refused(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:refused"  # counter


def edge_dropped(eid: str, fid: str, round_: int, reason: str) -> str:
    """Counter: uploads made for `round_` that the edge acknowledged and that reach no model, for `reason`."""
    return f"edge:{eid}:{fid}:round:{round_}:dropped:{reason}"


def edge_dropped_prefix(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:dropped:"


# A masking cohort (edge_aggregator.cohort_store): one edge's hospitals in one round. Each key is written
# with `EDGE_ROUND_TTL_S`, or given it once its stage closed (the lists, which transactions write).
def edge_masking_opened(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:masking:opened"  # json, SET NX: when the adverts stage opened


def edge_masking_message(eid: str, fid: str, round_: int, stage: str, client_id: str) -> str:
    # One hospital's signed message for a stage (KeyAdvert, ShareBundle, Consent, UnmaskShares), written once.
    return f"edge:{eid}:{fid}:round:{round_}:masking:{stage}:msg:{client_id}"


def edge_masking_senders(eid: str, fid: str, round_: int, stage: str) -> str:
    # Json list of the hospitals whose message for `stage` the edge holds, in the transaction that stores one.
    return f"edge:{eid}:{fid}:round:{round_}:masking:{stage}:senders"


def edge_masking_closed(eid: str, fid: str, round_: int, stage: str) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:masking:{stage}:closed"  # json, SET NX: no message after it


def edge_masking_key_claim(eid: str, fid: str, round_: int, public_key_hex: str) -> str:
    # Which hospital advertised this X25519 key: a key in two adverts would make every roster unusable.
    return f"edge:{eid}:{fid}:round:{round_}:masking:key:{public_key_hex}"


def edge_masking_correction(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:masking:correction"  # residue bytes, SET NX


def edge_masking_failed(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:masking:failed"  # json, SET NX: why the cohort cannot unmask


def edge_masking_prefix(eid: str, fid: str, round_: int) -> str:
    """Prefix of every key of round `round_`'s masking cohort (for `scan`)."""
    return f"edge:{eid}:{fid}:round:{round_}:masking:"


def quarantine_of(key: str, field: str | None = None) -> str:
    """Where a stored record (a plain key, or a hash's `field`) that no longer reads back is copied for the
    operator to inspect: beside its own keys, under `quarantine:` (`cloud:{fid}:quarantine:...`,
    `edge:{eid}:{fid}:quarantine:...`), out of every prefix the services scan."""
    head = 3 if key.startswith("edge:") else 2
    parts = key.split(":", head)
    if len(parts) <= head:
        return f"{key}:quarantine" + (f":{field}" if field is not None else "")
    name = parts[head] + (f":{field}" if field is not None else "")
    return ":".join([*parts[:head], "quarantine", name])


def edge_api_token(eid: str, fid: str) -> str:
    # The edge's live API token at the cloud, shared by its replicas: a replica that enrolled again (which
    # revokes the previous token) leaves the new one here for the others. A secret: protect the store.
    return f"edge:{eid}:{fid}:api-token"


def edge_nonce(eid: str, fid: str, nonce: str) -> str:
    return f"edge:{eid}:{fid}:nonce:{nonce}"
