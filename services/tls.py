"""TLS on every HTTP hop: what uvicorn serves with, what `Peer` and the CLIs verify with, and which party a
connection's client certificate names.

- A service serves with uvicorn's own TLS settings (`server_options`): its certificate and key, the
  federation's CA, and `CERT_OPTIONAL`, so a hospital or the admin's browser connects without a client
  certificate while an edge presents one that the handshake verifies against the CA.
- Outgoing calls (`client_context`) verify the peer against the federation's CA only (never the system
  store: a certificate a public CA issued for the cloud's name is not the cloud) and present the caller's
  own certificate when it has one.
- uvicorn 0.55 keeps the peer's certificate to itself: `PeerCertH11Protocol` (its h11 protocol, the one it
  picks without httptools installed, passed to uvicorn as `http=`) adds it to the ASGI scope as the ASGI TLS extension
  (`scope["extensions"]["tls"]["client_cert_chain"]`, PEM), per connection, by wrapping the app the
  protocol calls. `peer_uris(scope)` reads the URIs it names (`fedlora://<fid>/<role>/<id>`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.settings import ServerSettings

_URI_SCHEME = "fedlora"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class TLSSettingsError(ValueError):
    """TLS settings that cannot work together; the message names the setting."""


def server_options(
    *,
    cert_file: Path | None,
    key_file: Path | None,
    ca_file: Path | None,
    allow_plain_http: bool,
) -> dict[str, Any]:
    """uvicorn's keyword arguments for serving over TLS (its own `ssl_*` settings, and the protocol class
    that hands the verified client certificate to the app); `{}` for plain http, which needs
    `allow_plain_http`."""
    if cert_file is None:
        if allow_plain_http:
            return {}
        raise TLSSettingsError(
            "tls_cert_file is not set: this service would serve plain http, tokens and keys in the clear. Set "
            "FEDLORA_TLS_CERT_FILE, FEDLORA_TLS_KEY_FILE and FEDLORA_TLS_CA_FILE (`fedlora pki issue`), or "
            "FEDLORA_ALLOW_PLAIN_HTTP=true for a service behind a TLS-terminating proxy on the same host"
        )
    if key_file is None or ca_file is None:
        missing = "tls_key_file" if key_file is None else "tls_ca_file"
        raise TLSSettingsError(f"{missing} is not set, but tls_cert_file={str(cert_file)!r} is")
    for name, path in (("tls_cert_file", cert_file), ("tls_key_file", key_file), ("tls_ca_file", ca_file)):
        if not path.is_file():
            raise TLSSettingsError(f"{name}={str(path)!r} is not a file")
    return {
        "ssl_certfile": str(cert_file),
        "ssl_keyfile": str(key_file),
        "ssl_ca_certs": str(ca_file),
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "http": PeerCertH11Protocol,
    }


def serving_options(settings: ServerSettings, *, service: str, log: logging.Logger) -> dict[str, Any]:
    """`server_options` for a service's settings, at its start: a setting that cannot work stops the process
    with a message naming it; plain http (the operator's opt-in) is logged as unsafe."""
    try:
        options = server_options(
            cert_file=settings.tls_cert_file,
            key_file=settings.tls_key_file,
            ca_file=settings.tls_ca_file,
            allow_plain_http=settings.allow_plain_http,
        )
    except TLSSettingsError as e:
        sys.exit(f"{service} settings: {e}")
    if not options:
        log.warning(
            "UNSAFE: FEDLORA_ALLOW_PLAIN_HTTP is on: serving plain http, no client certificate checked"
        )
    return options


def client_context(
    *, ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext | None:
    """An `ssl.SSLContext` that trusts the federation's CA only and presents `cert_file` when given; None
    without a CA (plain http peers only: `check_peer_url` refuses an https URL then)."""
    if ca_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
        if cert_file is not None:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    except (OSError, ssl.SSLError) as e:
        raise TLSSettingsError(
            f"tls_ca_file={str(ca_file)!r} / tls_cert_file={str(cert_file)!r} cannot be loaded: {e}"
        ) from e
    return context


def verify_for(url: str, *, ca_file: Path | None, setting: str = "tls_ca_file") -> ssl.SSLContext | bool:
    """httpx's `verify=` for a call to `url`: the federation's CA for an https URL (refused without one,
    naming `setting`), True (unused) for plain http."""
    if urlsplit(url).scheme != "https":
        return True
    if ca_file is None:
        raise TLSSettingsError(
            f"{url!r} is https but {setting} is not set: the server is verified against the federation's "
            "ca.crt only (FEDLORA_TLS_CA_FILE)"
        )
    context = client_context(ca_file=ca_file)
    assert context is not None  # a CA file was given
    return context


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_peer_url(url: str, *, field: str, ca_file: Path | None, allow_plain_http: bool) -> str:
    """`url` if this party may call it: https with a CA to verify it against (`tls_ca_file`), or http
    to this machine or with `allow_plain_http`."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        if ca_file is None:
            raise TLSSettingsError(
                f"{field}={url!r} is https but tls_ca_file is not set: set FEDLORA_TLS_CA_FILE to the "
                "federation's ca.crt, the only CA its servers are verified against"
            )
        return url
    if parts.scheme == "http" and (allow_plain_http or is_loopback(parts.hostname)):
        return url
    raise TLSSettingsError(
        f"{field}={url!r} is not https: tokens and keys would cross the network in the clear (use https, "
        "or set FEDLORA_ALLOW_PLAIN_HTTP=true)"
    )


# -- the client certificate in the ASGI scope ---------------------------------------------------------------
class _WithPeerCertificate:
    """The app, with the connection's verified client certificate added to each request's scope."""

    def __init__(self, app: Any, tls: Mapping[str, Any]) -> None:
        self._app = app
        self._tls = tls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": dict(self._tls)}}
        await self._app(scope, receive, send)


def _tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    # The handshake verified it against the CA (CERT_OPTIONAL verifies a certificate that is presented).
    chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
    cipher = ssl_object.cipher()
    return {"client_cert_chain": chain, "tls_version": ssl_object.version(), "cipher_suite": cipher}


class PeerCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that puts the client certificate in the ASGI TLS extension."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        tls = _tls_extension(transport)
        if tls is not None:
            self.app = _WithPeerCertificate(self.app, tls)


def party_uri(federation_id: str, role: str, party_id: str) -> str:
    """The URI a party's certificate carries: `fedlora://<federation>/<role>/<id>`."""
    return f"{_URI_SCHEME}://{federation_id}/{role}/{party_id}"


def peer_uris(scope: Mapping[str, Any]) -> list[str] | None:
    """The URIs the connection's verified client certificate names; None when the request did not come
    over TLS with a client certificate."""
    tls = (scope.get("extensions") or {}).get("tls")
    if not tls or not tls.get("client_cert_chain"):
        return None
    certificate = x509.load_pem_x509_certificate(tls["client_cert_chain"][0].encode("ascii"))
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(x509.UniformResourceIdentifier))
