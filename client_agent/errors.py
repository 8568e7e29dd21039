"""Why a hospital's agent stops or refuses: one small hierarchy, so `python -m client_agent` can exit
non-zero on any of them and the loop can tell a round to skip from a federation to leave."""

from __future__ import annotations


class AgentError(RuntimeError):
    """The agent cannot go on (its data, the federation or its enrolment is unusable)."""


class LocalBudgetExhaustedError(AgentError):
    """The next round would take this hospital past its own example-level privacy budget."""


class PolicyRefusalError(AgentError):
    """The hospital's own policy refuses what a peer asked: `field` had `value`, against `limit`."""

    def __init__(self, message: str, *, field: str, value: object, limit: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.limit = limit


class SpecRefusedError(PolicyRefusalError):
    """The federation itself is unacceptable (its spec, its keys, its peers): the agent stops."""


class PinMismatchError(SpecRefusedError):
    """A peer presents another edge URL, HE key or plan key than the ones this hospital pinned."""


class InsecurePeerError(SpecRefusedError):
    """A cloud or edge URL that is plain http to another machine."""


class PlanRefusedError(PolicyRefusalError):
    """One round's plan is unacceptable (its settings, its signature, what it starts from): the agent skips
    that round, neither training nor uploading, and waits for the next plan."""
