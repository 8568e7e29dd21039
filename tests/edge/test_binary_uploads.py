"""The binary upload body (`protocol.upload_frame`) through a real edge: it round-trips into the sum and the
store holds the ciphertext's bytes as sent; a body that is not a frame, or is cut short or padded, is refused
with its code and costs no accepted upload; the signature covers the binary ciphertext."""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np
import pytest

from protocol.upload_frame import MAX_HEADER_BYTES, decode_upload, encode_upload
from services import keyspace
from tests.edge.harness import EID, FID, LENGTH, World, running_edge

pytestmark = pytest.mark.anyio
ATOL = 1e-5


async def test_binary_upload_is_summed_and_stored_as_sent(make_world: Callable[..., World]) -> None:
    # Prepare: hosp-a uploads a frame, hosp-b the JSON body: both stay accepted.
    world = make_world(clients=3)
    a, b = world.hospitals["hosp-a"], world.hospitals["hosp-b"]
    framed, as_json = world.update(a), world.update(b)

    # Execute
    async with running_edge(world) as edge:
        first = await edge.upload_frame(encode_upload(framed))
        second = await edge.upload(as_json)
        summed = await world.stored_sum()
        stored = await world.store.get(keyspace.edge_upload(EID, FID, 0, a.client_id))

    # Assert: the sum is the two vectors', and the store holds the frame's ciphertext byte for byte.
    assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
    assert first.json()["count"] == 1 and second.json()["count"] == 2
    np.testing.assert_allclose(summed, a.vector + b.vector, atol=ATOL)
    assert stored == framed.ciphertext


async def test_frame_decodes_to_the_update_it_encodes(make_world: Callable[..., World]) -> None:
    world = make_world(clients=3)
    update = world.update(world.hospitals["hosp-a"], noise_share_std=None)

    assert decode_upload(encode_upload(update)) == update


def _cut_in_ciphertext(body: bytes) -> bytes:
    return body[:-100]


def _padded(body: bytes) -> bytes:
    return body + b"\x00" * 16


def _header_past_body(body: bytes) -> bytes:
    return body[:5] + struct.pack(">I", len(body)) + body[9:]


def _header_over_bound(body: bytes) -> bytes:
    return body[:5] + struct.pack(">I", MAX_HEADER_BYTES + 1) + body[9:]


def _wrong_magic(body: bytes) -> bytes:
    return b"JSON" + body[4:]


def _only_prefix(body: bytes) -> bytes:
    return body[:6]


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (_cut_in_ciphertext, "frame.ciphertext"),
        (_padded, "frame.ciphertext"),
        (_header_past_body, "frame.header"),
        (_header_over_bound, "frame.header"),
        (_wrong_magic, "frame"),
        (_only_prefix, "frame"),
    ],
)
async def test_a_body_that_is_not_a_frame_is_refused_and_loses_nothing(
    make_world: Callable[..., World], mangle: Callable[[bytes], bytes], field: str
) -> None:
    # Prepare: hosp-a's frame is accepted first; hosp-b's is mangled.
    world = make_world(clients=3)
    a, b = world.hospitals["hosp-a"], world.hospitals["hosp-b"]

    # Execute
    async with running_edge(world) as edge:
        accepted = await edge.upload_frame(encode_upload(world.update(a)))
        refused = await edge.upload_frame(mangle(encode_upload(world.update(b))))
        progress = await edge.progress(0)
        summed = await world.stored_sum()

    # Assert: 422 naming the frame's part; hosp-a's upload is still the whole sum.
    assert accepted.status_code == 202, accepted.text
    body = refused.json()
    assert (refused.status_code, body["code"], body["field"]) == (422, "invalid_request", field), body
    assert progress["uploads_accepted"] == 1 and progress["uploads_refused"] == 1
    np.testing.assert_allclose(summed, a.vector, atol=ATOL)


async def test_a_flipped_ciphertext_byte_fails_the_signature(make_world: Callable[..., World]) -> None:
    # Prepare: the last byte of hosp-b's frame (its ciphertext's) flipped after signing.
    world = make_world(clients=3)
    a, b = world.hospitals["hosp-a"], world.hospitals["hosp-b"]
    body = bytearray(encode_upload(world.update(b)))
    body[-1] ^= 0x01

    # Execute
    async with running_edge(world) as edge:
        accepted = await edge.upload_frame(encode_upload(world.update(a)))
        flipped = await edge.upload_frame(bytes(body))
        summed = await world.stored_sum()
        stored = await world.store.get(keyspace.edge_upload(EID, FID, 0, b.client_id))

    # Assert
    assert accepted.status_code == 202, accepted.text
    assert (flipped.status_code, flipped.json()["code"]) == (401, "bad_signature"), flipped.text
    assert stored is None
    np.testing.assert_allclose(summed, a.vector, atol=ATOL)


async def test_a_signed_frame_of_the_wrong_length_is_a_bad_ciphertext(
    make_world: Callable[..., World],
) -> None:
    # Prepare: hosp-b signs a well-formed frame whose ciphertext holds one value too few.
    world = make_world(clients=3)
    b = world.hospitals["hosp-b"]
    short = world.public.serialize(world.public.encrypt(np.zeros(LENGTH - 1)))

    # Execute
    async with running_edge(world) as edge:
        refused = await edge.upload_frame(encode_upload(world.update(b, ciphertext=short)))
        progress = await edge.progress(0)

    # Assert
    assert (refused.status_code, refused.json()["code"]) == (400, "bad_ciphertext"), refused.text
    assert progress["uploads_accepted"] == 0


async def test_an_oversized_frame_is_refused_before_it_is_read(make_world: Callable[..., World]) -> None:
    # Prepare: a frame past the upload route's limit (the largest well-formed upload, in base64).
    world = make_world(clients=3)
    b = world.hospitals["hosp-b"]
    limit = world.public.max_ciphertext_bytes(LENGTH) * 2 + 1024 * 1024
    huge = encode_upload(world.update(b)) + b"\x00" * limit

    # Execute
    async with running_edge(world) as edge:
        refused = await edge.upload_frame(huge)
        progress = await edge.progress(0)

    # Assert
    assert (refused.status_code, refused.json()["code"]) == (413, "payload_too_large"), refused.text
    assert progress["uploads_accepted"] == 0
