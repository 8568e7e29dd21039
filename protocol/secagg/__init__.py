"""Masking below the encryption: secure aggregation that holds against a malicious edge and a curious cloud.

Each hospital of a cohort (one edge's hospitals in one round) adds to its encoded update a self mask and
one pairwise mask per neighbour, in the exact ring of the federation's scheme, and then encrypts
(Bonawitz et al., CCS 2017; with the neighbour graph of SecAgg+, Bell et al., CCS 2020). Masks cancel
only in the sum of the whole surviving cohort, each hospital counted once; the edge removes the rest with
shares the survivors reveal. So a single upload, or any other combination, decrypts to uniform noise,
even for an edge and the cloud that pool everything they hold.

    client = MaskingClient(cohort_id, "hospital-a", sign=key.sign, verify=verify, min_survivors=k)
    advert = client.advertise()                      # -> edge; the edge closes a Roster
    bundle = client.share(roster)                    # -> edge; route() builds each hospital's Inbox
    masked = client.mask(inbox, residues, bits=b)    # encrypt_residues(masked) -> edge, as the upload
    consent = client.consent(survivor_set)           # -> edge; a majority of signatures makes a request
    answer = client.unmask(request)                  # -> edge; correction() removes the masks
"""

from protocol.secagg.client import MaskingClient, Signer
from protocol.secagg.cohort import (
    Cohort,
    Verifier,
    degree_for,
    residue_bytes,
    residues_from_bytes,
    threshold_for,
)
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
from protocol.secagg.primitives import SecAggError, check_public_key
from protocol.secagg.unmask import correction, route

__all__ = [
    "Cohort",
    "CohortId",
    "Consent",
    "Inbox",
    "KeyAdvert",
    "MaskingClient",
    "Roster",
    "SecAggError",
    "ShareBundle",
    "Signer",
    "Stage",
    "StageRequest",
    "SurvivorSet",
    "UnmaskRequest",
    "UnmaskShares",
    "Verifier",
    "check_public_key",
    "correction",
    "degree_for",
    "residue_bytes",
    "residues_from_bytes",
    "route",
    "threshold_for",
]
