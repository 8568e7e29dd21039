"""The demo's run folder: what it keeps for `fedlora view`, and the cloud it describes."""

from __future__ import annotations

import os
import secrets
import stat

import pytest

from fedlora.demo_run import DemoRunFolder, RunFolderError
from services.keys import load_kek
from services.settings import CloudSettings


def test_prepare_keeps_secrets_owner_only_and_the_cloud_env_loads(tmp_path, monkeypatch) -> None:
    # Prepare: a folder left by an earlier run, with a readable token file and a store.
    run = DemoRunFolder(tmp_path / "demo")
    run.redis_dir.mkdir(parents=True)
    (run.redis_dir / "appendonly.aof").write_text("old")
    run.admin_token_file.write_text("old token")
    run.admin_token_file.chmod(0o644)
    token, kek = secrets.token_urlsafe(32), secrets.token_hex(32)

    # Execute
    run.prepare(admin_token=token, kek_hex=kek, cloud_settings={"host": "127.0.0.1", "long_poll_s": 5.0})
    run.redis_dir.mkdir()  # what the redis-server of the new run creates
    run.issue_certificates(federation_id="demo", edges=["edge-1"], clients=["hospital-a"])
    users = run.store_users()
    tls = run.store_tls()
    certificate = tls.server.cert_file.read_bytes()
    env = run.cloud_env(port=8799, store_url="rediss://127.0.0.1:6390/0")

    # Assert: a new run starts from an empty store, the secrets are owner-only, the settings load back.
    assert list(run.redis_dir.iterdir()) == []
    for secret in (
        run.admin_token_file,
        run.kek_file,
        users.service.password_file,
        users.admin.password_file,
        tls.service.key_file,
        run.ca_dir / "ca.key",
        run.party(None).key_file,
    ):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    run.check()
    for name in list(os.environ):
        if name.startswith("FEDLORA_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = CloudSettings()  # type: ignore[call-arg]
    assert settings.admin_token.get_secret_value() == token
    assert (settings.port, settings.store_url, settings.long_poll_s) == (
        8799,
        "rediss://127.0.0.1:6390/0",
        5.0,
    )
    assert load_kek() == bytes.fromhex(kek)
    # The cloud logs in to Redis as its own ACL user, the one the run's ACL file confines to `cloud:` keys.
    assert (settings.store_username, settings.store_password()) == (
        users.service.name,
        users.service.password,
    )
    # ... over TLS, showing its own client certificate of the run's CA.
    assert settings.store_tls() == tls.service
    assert run.store_users() == users  # `fedlora view` gets the same users back
    assert run.store_tls() == tls and tls.server.cert_file.read_bytes() == certificate  # and the same files
    # The cloud serves TLS with the run's certificate; the CA's key is in no party's folder.
    assert (settings.tls_cert_file, settings.tls_ca_file) == (
        run.party(None).cert_file.resolve(),
        run.party(None).ca_file.resolve(),
    )
    assert not list(run.tls_dir.rglob("ca.key"))


def test_check_names_what_a_folder_lacks(tmp_path) -> None:
    with pytest.raises(RunFolderError, match="is not a folder"):
        DemoRunFolder(tmp_path / "missing").check()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text("{}")
    with pytest.raises(
        RunFolderError, match=r"no redis, store-users/cloud/redis/users\.acl, admin-token, kek, cloud\.yaml"
    ):
        DemoRunFolder(tmp_path / "old").check()
