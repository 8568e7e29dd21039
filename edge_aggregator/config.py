"""What an edge knows before its first upload, how it reads a wire time, and the quorum rule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from protocol.crypto import PaillierParams
from protocol.messages import FederationInfo, FederationSpec
from services import keyspace


def quorum_target(quorum: float, expected: int) -> int:
    """Uploads that close a round early: `ceil(quorum * expected)`, at least one.

    The small tolerance keeps float error from asking for one client more (0.7 * 10 is 7.000000000000001).
    """
    return max(1, math.ceil(quorum * expected - 1e-9))


def aware(moment: datetime) -> datetime:
    """`moment` with a time zone: naive datetimes on the wire are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class EdgeConfig:
    """What an edge knows before its first upload: who it is and the federation it serves."""

    edge_id: str
    federation: FederationInfo
    #: Least time between two roster refreshes caused by unknown client ids (anyone can send those).
    roster_refresh_s: float = 2.0
    #: Longest a request waits for the cloud when it needs a fresher plan or roster.
    refresh_timeout_s: float = 5.0
    #: Longest a masking stage waits for hospitals that have not posted (`edge_aggregator.masking`).
    masking_stage_s: float = 30.0
    #: How long a round's sum, manifest and plan are kept once its forward has an outcome.
    retain_round_s: float = keyspace.EDGE_ROUND_TTL_S

    def __post_init__(self) -> None:
        if not self.masking_stage_s > 0:
            raise ValueError(f"masking_stage_s must be positive, got {self.masking_stage_s}")
        if not self.retain_round_s > 0:
            raise ValueError(f"retain_round_s must be positive, got {self.retain_round_s}")
        key = self.idempotency_key(0)
        if len(key) < 8:
            raise ValueError(
                f"idempotency keys '{{fid}}:{{n}}:{{edge_id}}' must have at least 8 characters, {key!r} has "
                f"{len(key)}: use a longer edge_id"
            )

    @property
    def federation_id(self) -> str:
        return self.federation.spec.federation_id

    @property
    def spec(self) -> FederationSpec:
        return self.federation.spec

    @property
    def masking(self) -> bool:
        """Whether hospitals mask below the encryption (`protocol.secagg`) and the edge runs the stages."""
        return isinstance(self.spec.he, PaillierParams) and self.spec.he.masking

    @property
    def layout_size(self) -> int:
        return self.federation.layout_size

    def idempotency_key(self, round_: int) -> str:
        return f"{self.federation_id}:{round_}:{self.edge_id}"
