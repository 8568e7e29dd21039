"""A test app's error handlers: the edge's (`services.asgi.install_error_handlers` with the edge's wording),
which the request limits answer their refusals with, as in a service's app."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from edge_aggregator.errors import internal_error, invalid_request
from services.asgi import install_error_handlers


def with_edge_error_handlers(app: FastAPI) -> FastAPI:
    install_error_handlers(
        app,
        log=logging.getLogger("tests"),
        invalid_request=invalid_request,
        internal_error=internal_error,
        omit_nulls=False,
    )
    return app
