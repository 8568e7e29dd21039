"""Identities, settings, the retrying HTTP peer, the federation layout and hospital shares."""

import asyncio

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from client_agent.agent import AgentState
from client_agent.data import PartitionError, Share, partition
from protocol.messages import FederationSpec
from protocol.noise import clip
from services.http import Peer, PeerRefusedError, PeerUnavailableError
from services.identity import IdentityError, SigningKey, token_digest, verify
from services.settings import CloudSettings, EdgeSettings

GOOD_SECRET = "q8Zr2LmX0vT4kPa9sWcE1nBh"


def test_signatures_verify_and_refuse(tmp_path):
    key = SigningKey.load_or_create(tmp_path / "k.bin")
    assert (tmp_path / "k.bin").stat().st_mode & 0o777 == 0o600
    again = SigningKey.load_or_create(tmp_path / "k.bin")
    assert again.public_bytes == key.public_bytes
    signature = key.sign(b"payload")
    verify(key.public_bytes, b"payload", signature)
    with pytest.raises(IdentityError, match="does not verify"):
        verify(key.public_bytes, b"payload!", signature)
    with pytest.raises(IdentityError, match="does not verify"):
        verify(SigningKey.generate().public_bytes, b"payload", signature)
    with pytest.raises(IdentityError, match="32 bytes"):
        verify(b"short", b"payload", signature)
    assert token_digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(
    "secret", ["changeme-please-123", "short", "<admin-token-here>", "aaaaaaaaaaaaaaaaaaaa"]
)
def test_settings_refuse_placeholder_secrets(secret, monkeypatch):
    monkeypatch.setenv("FEDLORA_ADMIN_TOKEN", secret)
    with pytest.raises(ValidationError, match="admin_token"):
        CloudSettings()


def test_settings_from_env_and_yaml(tmp_path, monkeypatch):
    config = tmp_path / "edge.yaml"
    config.write_text(
        "edge_id: edge-eu\nfederation_id: onco\ncloud_url: http://cloud:8700\n"
        "public_url: http://edge-eu:8710\nport: 9000\n"
    )
    monkeypatch.setenv("FEDLORA_CONFIG", str(config))
    monkeypatch.setenv("FEDLORA_ENROLMENT_TOKEN", GOOD_SECRET)
    monkeypatch.setenv("FEDLORA_PORT", "9100")  # the environment wins over the file
    settings = EdgeSettings()
    assert (settings.edge_id, settings.port, settings.cloud_url) == ("edge-eu", 9100, "http://cloud:8700")
    assert settings.enrolment_token.get_secret_value() == GOOD_SECRET
    monkeypatch.setenv("FEDLORA_EDGE_ID", "Not Valid")
    with pytest.raises(ValidationError, match="edge_id"):
        EdgeSettings()


def _flaky_app(failures: int, status: int):
    app = FastAPI()
    calls = {"n": 0}

    @app.get("/thing")
    def thing():
        calls["n"] += 1
        if calls["n"] <= failures:
            return JSONResponse({"code": "internal", "message": "try later"}, status_code=status)
        return {"ok": True}

    @app.get("/refuse")
    def refuse():
        calls["n"] += 1
        body = {"code": "replay", "message": "nonce already used", "detail": {"client_ids": ["h-a"]}}
        return JSONResponse(body, status_code=409)

    return app, calls


def _peer(app, attempts=5):
    peer = Peer(
        "http://edge.test", attempts=attempts, max_wait_s=0.01, transport=httpx.ASGITransport(app=app)
    )
    return peer


def test_peer_retries_server_errors_then_succeeds():
    app, calls = _flaky_app(failures=2, status=503)

    async def scenario():
        peer = _peer(app)
        response = await peer.request("GET", "/thing")
        await peer.close()
        return response

    assert asyncio.run(scenario()).json() == {"ok": True}
    assert calls["n"] == 3


def test_peer_gives_up_and_does_not_retry_refusals():
    app, calls = _flaky_app(failures=10, status=500)

    async def scenario(path):
        peer = _peer(app, attempts=3)
        try:
            await peer.request("GET", path)
        finally:
            await peer.close()

    with pytest.raises(PeerUnavailableError, match="/thing"):
        asyncio.run(scenario("/thing"))
    assert calls["n"] == 3
    calls["n"] = 0
    with pytest.raises(PeerRefusedError) as refused:
        asyncio.run(scenario("/refuse"))
    assert (refused.value.status, refused.value.code) == (409, "replay")
    assert refused.value.detail == {"client_ids": ["h-a"]}  # what an edge needs to forward without h-a
    assert calls["n"] == 1


def test_peer_makes_no_new_attempt_past_the_time_it_is_given():
    """An edge's forward retries only within the round's forward budget (`give_up_after_s`): with none of
    it left, one attempt; without a limit, every attempt the peer allows."""
    app, calls = _flaky_app(failures=10, status=503)

    async def scenario(give_up_after_s):
        peer = _peer(app, attempts=3)
        try:
            await peer.request("GET", "/thing", give_up_after_s=give_up_after_s)
        finally:
            await peer.close()

    with pytest.raises(PeerUnavailableError):
        asyncio.run(scenario(0.0))
    assert calls["n"] == 1
    calls["n"] = 0
    with pytest.raises(PeerUnavailableError):
        asyncio.run(scenario(None))
    assert calls["n"] == 3


def test_federation_layout_matches_the_client_model():
    from client_agent.model import AdapterSpec, FFAClassifier, default_model_path, load_encoder
    from services.model_layout import LayoutError, federation_layout

    spec = FederationSpec(federation_id="x", r_max=4, target_modules=("value",), layers_to_transform=(4, 5))
    layout, in_features = federation_layout(spec, default_model_path())
    model = FFAClassifier(load_encoder(default_model_path()), AdapterSpec.from_federation(spec), rank=2)
    assert layout.digest == model.layout.digest
    assert (
        in_features
        == model.in_features()
        == {
            "encoder.layer.4.attention.self.value": 384,
            "encoder.layer.5.attention.self.value": 384,
        }
    )
    with pytest.raises(LayoutError, match=r"target_modules \['nope'\]: 'nope' matches no module"):
        federation_layout(FederationSpec(federation_id="x", target_modules=("nope",)), default_model_path())


def test_shares_parse_and_split():
    assert Share.parse("mild:2/4") == Share("mild", 2, 4)
    assert Share.parse("dirichlet-0.3:1/3").kind == "dirichlet-0.3"
    for bad in ("mild:0/4", "mild:5/4", "weird:1/2", "mild"):
        with pytest.raises(PartitionError):
            Share.parse(bad)
    labels = np.array([0, 1] * 50)
    parts = partition(labels, kind="severe", n_clients=2, seed=0)
    assert [int((labels[p] == 0).mean() * 100) for p in parts] == [10, 90]


def test_clip_l2_l1_and_agent_state(tmp_path):
    v = np.array([3.0, 4.0])
    np.testing.assert_allclose(clip(v, max_norm=1.0), [0.6, 0.8])
    np.testing.assert_array_equal(clip(v, max_norm=10.0), v)
    np.testing.assert_allclose(clip(v, max_norm=1.0, ord=1), [3 / 7, 4 / 7])
    state = AgentState(api_token="t" * 20, edge_url="http://e:1", last_round=3, privacy=[(1.1, 0.1, 20)])
    state.save(tmp_path / "s.json")
    assert AgentState.load(tmp_path / "s.json") == state
    assert AgentState.load(tmp_path / "none.json") == AgentState()
