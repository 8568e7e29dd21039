"""FastAPI dependencies of the edge's routes, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from edge_aggregator.aggregator import EdgeAggregator
from edge_aggregator.runtime import EdgeRuntime


def get_runtime(request: Request) -> EdgeRuntime:
    runtime: EdgeRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[EdgeRuntime, Depends(get_runtime)]


def get_edge(runtime: RuntimeDep) -> EdgeAggregator:
    return runtime.ready_aggregator()


EdgeDep = Annotated[EdgeAggregator, Depends(get_edge)]
