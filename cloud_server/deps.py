"""`Annotated` dependency aliases for the routes: the request's context and its services."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from cloud_server.adapters import AdapterService
from cloud_server.context import CloudContext
from cloud_server.edge_clocks import EdgeClocks
from cloud_server.enrolment import EnrolmentService
from cloud_server.enrolment_tokens import EnrolmentTokenService
from cloud_server.federations import FederationService
from cloud_server.rounds import RoundService


def get_context(request: Request) -> CloudContext:
    context: CloudContext = request.app.state.cloud
    return context


ContextDep = Annotated[CloudContext, Depends(get_context)]


def _federations(context: ContextDep) -> FederationService:
    return context.federations


def _enrolment(context: ContextDep) -> EnrolmentService:
    return context.enrolment


def _enrolment_tokens(context: ContextDep) -> EnrolmentTokenService:
    return context.enrolment_tokens


def _rounds(context: ContextDep) -> RoundService:
    return context.rounds


def _adapters(context: ContextDep) -> AdapterService:
    return context.adapters


def _edge_clocks(context: ContextDep) -> EdgeClocks:
    return context.edge_clocks


FederationsDep = Annotated[FederationService, Depends(_federations)]
EnrolmentDep = Annotated[EnrolmentService, Depends(_enrolment)]
EnrolmentTokensDep = Annotated[EnrolmentTokenService, Depends(_enrolment_tokens)]
RoundsDep = Annotated[RoundService, Depends(_rounds)]
AdaptersDep = Annotated[AdapterService, Depends(_adapters)]
EdgeClocksDep = Annotated[EdgeClocks, Depends(_edge_clocks)]
