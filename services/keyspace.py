"""Every state-store key and TTL in one place (as arq keeps its Redis keys), so no two modules disagree.

Cloud keys start with `cloud:`, edge keys with `edge:{edge_id}:`; both then name the federation.
"""

from __future__ import annotations

# Replays are refused for as long as a nonce could be replayed into any open round.
NONCE_TTL_S = 7 * 24 * 3600
# An edge forgets a round's sum and manifest this long after forwarding it (kept for audits and retries).
EDGE_ROUND_TTL_S = 30 * 24 * 3600


# -- cloud ---------------------------------------------------------------------------------------------
def federations() -> str:
    return "cloud:federations"  # hash: federation id -> created-at


def fed_spec(fid: str) -> str:
    return f"cloud:{fid}:spec"


def fed_state(fid: str) -> str:
    return f"cloud:{fid}:state"


def fed_public(fid: str) -> str:
    return f"cloud:{fid}:he:public"


def fed_secret(fid: str) -> str:
    return f"cloud:{fid}:he:secret-sealed"


def fed_tokens(fid: str) -> str:
    return f"cloud:{fid}:tokens"  # hash: sha256(token) -> json {role, subject}


def fed_edges(fid: str) -> str:
    return f"cloud:{fid}:edges"  # hash: edge id -> EdgeInfo json


def fed_clients(fid: str) -> str:
    return f"cloud:{fid}:clients"  # hash: client id -> ClientInfo json


def fed_current_round(fid: str) -> str:
    return f"cloud:{fid}:round"


def fed_round_plan(fid: str, round_: int) -> str:
    return f"cloud:{fid}:round:{round_}:plan"


def fed_round_status(fid: str, round_: int) -> str:
    return f"cloud:{fid}:round:{round_}:status"


def fed_round_aggregates(fid: str, round_: int) -> str:
    return f"cloud:{fid}:round:{round_}:aggregates"  # hash: edge id -> EdgeAggregate json (HSETNX)


def fed_adapter(fid: str, version: int) -> str:
    return f"cloud:{fid}:adapter:{version}"  # float32 little-endian global vector


# -- edge ----------------------------------------------------------------------------------------------
def edge_sum(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:sum"


def edge_manifest(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:manifest"  # hash: client id -> Contribution json


def edge_forwarded(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:forwarded"


def edge_refused(eid: str, fid: str, round_: int) -> str:
    return f"edge:{eid}:{fid}:round:{round_}:refused"  # counter


def edge_nonce(eid: str, fid: str, nonce: str) -> str:
    return f"edge:{eid}:{fid}:nonce:{nonce}"
