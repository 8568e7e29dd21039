"""HTTP between tiers: httpx with timeouts, and tenacity retries with exponential backoff and jitter.

Only failures worth retrying are retried: connection errors, timeouts, 429 and 5xx. A 4xx other than 429
is the peer saying no; it raises `PeerRefusedError` at once with the peer's machine-readable error code.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=60.0, pool=5.0)


class PeerRefusedError(RuntimeError):
    """The peer answered with a 4xx (not 429): retrying the same request cannot help."""

    def __init__(
        self, status: int, code: str, message: str, *, detail: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail: dict[str, Any] = dict(detail or {})  # the body's machine-readable `detail`, if any


class PeerUnavailableError(RuntimeError):
    """The peer could not be reached or kept failing after every retry."""


def _retryable(error: BaseException) -> bool:
    if isinstance(error, httpx.TransportError):
        return True
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code == 429 or error.response.status_code >= 500
    return False


def _refusal(response: httpx.Response) -> PeerRefusedError:
    try:
        body = response.json()
        detail = body.get("detail")
        return PeerRefusedError(
            response.status_code,
            str(body.get("code")),
            str(body.get("message")),
            detail=detail if isinstance(detail, dict) else None,
        )
    except (ValueError, AttributeError):
        return PeerRefusedError(response.status_code, "unknown", response.text[:500])


class Peer:
    """One remote service: a base URL, a bearer token, and retrying JSON/bytes requests."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        attempts: int = 8,
        max_wait_s: float = 10.0,
        give_up_after_s: float = 300.0,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        """`verify`: the TLS context for an https peer (`services.tls.client_context`: the federation's CA,
        and this party's client certificate); None only for plain http peers."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            verify=verify if verify is not None else True,
        )
        self._attempts = attempts
        self._max_wait_s = max_wait_s
        self._give_up_after_s = give_up_after_s

    def set_token(self, token: str) -> None:
        self._client.headers["Authorization"] = f"Bearer {token}"

    @property
    def token(self) -> str | None:
        value = self._client.headers.get("Authorization", "")
        return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        retry: bool = True,
        give_up_after_s: float | None = None,
    ) -> httpx.Response:
        """Send with retries (no new attempt after `give_up_after_s`, the peer's default if None); return the
        2xx response, raise `PeerRefusedError` on a 4xx, `PeerUnavailableError` else."""
        give_up = self._give_up_after_s if give_up_after_s is None else give_up_after_s
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts if retry else 1) | stop_after_delay(give_up),
            wait=wait_exponential_jitter(multiplier=0.2, max=self._max_wait_s),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._client.request(
                        method,
                        path,
                        json=json,
                        content=content,
                        params=params,
                        headers=headers,
                        timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                    )
                    if 400 <= response.status_code < 500 and response.status_code != 429:
                        raise _refusal(response)
                    response.raise_for_status()
                    return response
        except PeerRefusedError:
            raise
        except (httpx.TransportError, httpx.HTTPStatusError) as e:
            raise PeerUnavailableError(f"{method} {path}: {e}") from e
        raise PeerUnavailableError(f"{method} {path}: no attempt made")  # pragma: no cover

    async def close(self) -> None:
        await self._client.aclose()
