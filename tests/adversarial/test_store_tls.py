"""Redis over TLS (`rediss://`): a real redis-server that serves TLS only and asks every client for a
certificate of the federation's CA. A client that trusts another CA, shows no certificate, reaches the
server under a name its certificate does not carry, or speaks plain `redis://` to the TLS port is refused
with a typed `StoreError` naming the URL with its password redacted; the services' TLS files are checked at
start-up with the setting's name; a URL cannot loosen the check; a renewed certificate keeps the data."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from fedlora import store_users
from fedlora.pki import new_authority
from fedlora.store_certs import issue_store_certificates
from services.settings import ServiceSettings
from services.store import RedisStore, StoreError, open_store
from services.store_tls import StoreTLS, StoreTLSError
from tests.redis_server import RedisServer, issue_tls

PASSWORD = "s3cret-never-in-a-message"


def _refusal(url: str, tls: StoreTLS | None) -> str:
    """The `StoreError` one GET raises through a store on `url` (no reconnect: each refusal is final)."""

    async def scenario() -> str:
        store = RedisStore(url, tls=tls, reconnect_attempts=0)
        try:
            with pytest.raises(StoreError) as refused:
                await store.get("k")
            return str(refused.value)
        finally:
            await store.close()

    return asyncio.run(scenario())


def _url(port: int, *, scheme: str = "rediss", host: str = "127.0.0.1") -> str:
    return f"{scheme}://fedlora-cloud:{PASSWORD}@{host}:{port}/0"


def test_a_client_that_trusts_another_ca_is_refused_with_the_url_redacted(tls_redis, tmp_path) -> None:
    server, _ = tls_redis
    impostor_ca = issue_tls(tmp_path / "other").service
    message = _refusal(_url(server.port), impostor_ca)
    assert "certificate verify failed" in message.lower()
    assert f"rediss://fedlora-cloud:***@127.0.0.1:{server.port}/0" in message and PASSWORD not in message


def test_a_client_without_a_certificate_is_refused(tls_redis) -> None:
    server, files = tls_redis
    message = _refusal(_url(server.port), StoreTLS(ca_file=files.service.ca_file))
    # TLS 1.3: the server refuses the missing certificate after the client's side of the handshake is done,
    # with a `certificate required` alert; a client that has written its first command by then may read
    # the reset instead of the alert. Either way nothing was answered.
    assert any(why in message.lower() for why in ("certificate required", "connection reset")), message
    assert PASSWORD not in message


def test_a_plain_client_on_the_tls_port_is_told_to_use_rediss(tls_redis) -> None:
    server, _ = tls_redis
    message = _refusal(_url(server.port, scheme="redis"), None)
    assert "use rediss://" in message and PASSWORD not in message


def test_the_server_certificate_must_name_the_host(tmp_path) -> None:
    """A certificate of the right CA, valid for 127.0.0.1 only, reached as `localhost`: refused, since the
    host name is checked."""
    authority = new_authority("fedlora test CA")
    files = issue_store_certificates(
        {"cloud": (tmp_path / "store", store_users.CLOUD_USER)},
        authority,
        federation_id="t",
        hosts="127.0.0.1",
    )["cloud"]
    server = RedisServer(tmp_path / "data", tls=files.server).start()
    try:
        message = _refusal(_url(server.port, host="localhost"), files.service)
    finally:
        server.kill()
    assert "hostname mismatch" in message.lower() and PASSWORD not in message


@pytest.mark.parametrize("setting", ["missing", "not a certificate"])
def test_an_unusable_ca_file_stops_the_store_naming_the_setting(tmp_path, setting) -> None:
    ca_file = tmp_path / "ca.crt"
    if setting == "not a certificate":
        ca_file.write_text("not a certificate\n")
    with pytest.raises(StoreTLSError, match=f"store_ca_file '{ca_file}'"):
        open_store("rediss://127.0.0.1:6390/0", tls=StoreTLS(ca_file=ca_file))


def test_a_client_certificate_needs_its_key(tmp_path) -> None:
    with pytest.raises(ValidationError, match="store_cert_file and store_key_file go together"):
        ServiceSettings(store_url="rediss://r:6379/0", store_cert_file=tmp_path / "c.crt")


@pytest.mark.parametrize("query", ["ssl_cert_reqs=none", "ssl_check_hostname=false"])
def test_a_url_cannot_turn_the_check_off(query) -> None:
    with pytest.raises(StoreError, match="the server's certificate is always verified"):
        open_store(f"rediss://:{PASSWORD}@r:6379/0?{query}")


def test_tls_files_on_a_plain_url_are_refused(tmp_path) -> None:
    with pytest.raises(StoreError, match="is not rediss://"):
        open_store("redis://r:6379/0", tls=StoreTLS(ca_file=tmp_path / "ca.crt"))
