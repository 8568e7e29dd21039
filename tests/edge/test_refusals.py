"""Every refusal of docs/api.md's upload checks, with its code, and the sum untouched by each."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from protocol.crypto import CKKSParams, generate_scheme
from protocol.messages import NoiseShare
from services.identity import SigningKey
from tests.edge.harness import FID, LENGTH, World, running_edge

pytestmark = pytest.mark.anyio
ATOL = 1e-5


async def test_replay_and_second_upload_are_refused_and_leave_the_sum(
    make_world: Callable[..., World],
) -> None:
    world = make_world(clients=3)
    a = world.hospitals["hosp-a"]
    first = world.update(a)

    async with running_edge(world) as edge:
        accepted = await edge.upload(first)
        replay = await edge.upload(first)
        again = await edge.upload(world.update(a))  # same client, fresh nonce
        progress = await edge.progress(0)

    assert accepted.status_code == 202
    assert (replay.status_code, replay.json()["code"]) == (409, "replay")
    assert (again.status_code, again.json()["code"]) == (409, "duplicate_upload")
    np.testing.assert_allclose(await world.stored_sum(), a.vector, atol=ATOL)
    assert progress["uploads_accepted"] == 1 and progress["uploads_refused"] == 2


def _garbage(world: World, good: bytes) -> bytes:
    return secrets.token_bytes(len(good))


def _truncated(world: World, good: bytes) -> bytes:
    return good[:-100]


def _extended(world: World, good: bytes) -> bytes:
    return good + b"\x00" * 16


def _other_key(world: World, good: bytes) -> bytes:
    other = generate_scheme(CKKSParams())
    return other.serialize(other.encrypt(np.zeros(LENGTH)))


def _wrong_length(world: World, good: bytes) -> bytes:
    return world.public.serialize(world.public.encrypt(np.zeros(LENGTH - 1)))


def _sum_of_two(world: World, good: bytes) -> bytes:
    one = world.public.encrypt(np.zeros(LENGTH))
    return world.public.serialize(world.public.add(one, one))


def _other_scheme_code(world: World, good: bytes) -> bytes:
    return good[:5] + b"\x02" + good[6:]  # the envelope says Paillier


@pytest.mark.parametrize(
    "make_bad", [_garbage, _truncated, _extended, _other_key, _wrong_length, _sum_of_two, _other_scheme_code]
)
async def test_malformed_ciphertext_is_refused_and_leaves_the_sum(
    make_world: Callable[..., World], make_bad: Callable[[World, bytes], bytes]
) -> None:
    world = make_world(clients=3)
    a, b = world.hospitals["hosp-a"], world.hospitals["hosp-b"]
    good = world.update(b).ciphertext
    bad = world.update(b, ciphertext=make_bad(world, good))

    async with running_edge(world) as edge:
        assert (await edge.upload(world.update(a))).status_code == 202
        refused = await edge.upload(bad)
        after_refusal = await world.stored_sum()
        retry = await edge.upload(world.update(b))  # the refusal used up neither nonce nor slot

    assert (refused.status_code, refused.json()["code"]) == (400, "bad_ciphertext"), refused.text
    assert refused.json()["field"] == "ciphertext"
    np.testing.assert_allclose(after_refusal, a.vector, atol=ATOL)
    assert retry.status_code == 202
    np.testing.assert_allclose(await world.stored_sum(), a.vector + b.vector, atol=ATOL)


async def _refusal(
    world: World, body: dict[str, Any] | None = None, **request: Any
) -> tuple[int, dict[str, Any]]:
    async with running_edge(world) as edge:
        response = await edge.http.post(f"/federations/{FID}/rounds/0/uploads", **request)
    return response.status_code, response.json()


async def test_each_check_answers_with_its_code(make_world: Callable[..., World]) -> None:
    world = make_world(clients=3)
    a = world.hospitals["hosp-a"]
    outsider = world.enrol("hosp-far", edge_id="edge-south")  # enrolled, but at another edge
    world.enrol("hosp-late")  # enrolled here, but not in round 0's plan
    stranger_key = SigningKey.generate()
    unsigned = world.update(a).model_copy(update={"signature": b""})
    tampered = world.update(a).model_copy(update={"weight": 9.0})

    cases = {
        "unknown client": (
            world.update(a).model_copy(update={"client_id": "hosp-zz"}),
            0,
            FID,
            401,
            "unauthenticated",
        ),
        "other edge's client": (world.update(outsider), 0, FID, 401, "unauthenticated"),
        "signed by another key": (world.update(a, signer=stranger_key), 0, FID, 401, "bad_signature"),
        "unsigned": (unsigned, 0, FID, 401, "bad_signature"),
        "tampered after signing": (tampered, 0, FID, 401, "bad_signature"),
        "future round": (world.update(a, round_=3), 3, FID, 409, "round_not_open_yet"),
        "path round differs": (world.update(a), 1, FID, 409, "wrong_round"),
        "path federation differs": (world.update(a), 0, "fed-other", 404, "unknown_federation"),
        "other federation": (
            world.update(a, federation_id="fed-other"),
            0,
            "fed-other",
            404,
            "unknown_federation",
        ),
        "wrong basis": (world.update(a, basis=7), 0, FID, 409, "wrong_basis"),
        "not in plan": (world.update(world.hospitals["hosp-late"]), 0, FID, 403, "forbidden"),
    }
    answers = {}
    async with running_edge(world) as edge:
        for name, (update, path_round, path_fid, _, _) in cases.items():
            response = await edge.upload(update, round_=path_round, federation_id=path_fid)
            answers[name] = (response.status_code, response.json()["code"])
        progress = await edge.progress(0)

    assert answers == {name: (case[3], case[4]) for name, case in cases.items()}
    assert not await world.has_sum()
    assert progress["uploads_accepted"] == 0


async def test_oversized_bodies_are_refused_before_parsing(make_world: Callable[..., World]) -> None:
    world = make_world(clients=3)
    world.settings_overrides["max_body_bytes"] = 200_000
    big = world.update(world.hospitals["hosp-a"], ciphertext=b"\x01" * 300_000).model_dump_json().encode()

    async def streamed() -> Any:  # no Content-Length: the limit counts the bytes as they arrive
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    async with running_edge(world) as edge:
        declared = await edge.http.post(
            f"/federations/{FID}/rounds/0/uploads", content=big, headers={"Content-Type": "application/json"}
        )
        chunked = await edge.http.post(
            f"/federations/{FID}/rounds/0/uploads",
            content=streamed(),
            headers={"Content-Type": "application/json"},
        )

    assert (declared.status_code, declared.json()["code"]) == (413, "payload_too_large")
    assert (chunked.status_code, chunked.json()["code"]) == (413, "payload_too_large")
    assert not await world.has_sum()


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"{not json", None),
        (b"[]", None),
        (b'{"federation_id": "fed-test"}', "round"),
        (b"", None),
    ],
)
async def test_invalid_bodies_are_invalid_requests(
    make_world: Callable[..., World], content: bytes, field: str | None
) -> None:
    status, body = await _refusal(make_world(), content=content, headers={"Content-Type": "application/json"})
    assert (status, body["code"]) == (422, "invalid_request")
    if field is not None:
        assert body["field"] == field


async def test_bad_path_parameters_are_invalid_requests(make_world: Callable[..., World]) -> None:
    world = make_world()
    async with running_edge(world) as edge:
        response = await edge.http.post(f"/federations/{FID}/rounds/minus-one/uploads", content=b"{}")
        missing = await edge.http.get("/nowhere")
    assert (response.status_code, response.json()["code"]) == (422, "invalid_request")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


async def test_with_distributed_noise_an_upload_must_declare_the_plans_share(
    make_world: Callable[..., World],
) -> None:
    world = make_world(clients=3)
    share = NoiseShare(mechanism="gaussian", std=0.25, clients=3, noise_multiplier=0.5)
    world.cloud.set_plan(world.plan(0, noise_share=share))
    a, b = world.hospitals["hosp-a"], world.hospitals["hosp-b"]

    async with running_edge(world) as edge:
        undeclared = await edge.upload(world.update(a))
        smaller = await edge.upload(world.update(a, noise_share_std=0.1))
        declared = await edge.upload(world.update(b, noise_share_std=0.25))

    for refused in (undeclared, smaller):
        assert refused.status_code == 422
        assert (refused.json()["code"], refused.json()["field"]) == ("invalid_request", "noise_share_std")
    assert declared.status_code == 202
    np.testing.assert_allclose(await world.stored_sum(), b.vector, atol=ATOL)
