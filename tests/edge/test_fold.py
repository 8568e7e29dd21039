"""The edge's arithmetic on its own: one upload read and checked, a running sum folded."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_aggregator.errors import BadCiphertextError
from edge_aggregator.fold import fold, parse_upload
from protocol.crypto import HEScheme
from protocol.messages import ErrorCode

LENGTH = 50


def test_three_uploads_fold_into_their_sum_and_each_addition_is_timed(
    secret_scheme: HEScheme[Any], client_scheme: HEScheme[Any]
) -> None:
    # Prepare: three hospitals' vectors, encrypted under the public key.
    vectors = [np.random.default_rng(seed).uniform(-1, 1, LENGTH) for seed in range(3)]
    uploads = [client_scheme.serialize(client_scheme.encrypt(v)) for v in vectors]
    timings: list[float] = []

    # Execute: the edge reads and adds each, keeping the sum as bytes.
    total: bytes | None = None
    for upload in uploads:
        incoming = parse_upload(client_scheme, upload, length=LENGTH)
        total = fold(client_scheme, total, incoming, length=LENGTH, added=timings.append)

    # Assert: the first upload is stored as it came, the two others were added.
    assert total is not None
    decrypted = secret_scheme.decrypt(secret_scheme.deserialize(total, expected_length=LENGTH))
    np.testing.assert_allclose(decrypted, np.sum(vectors, axis=0), atol=1e-6)
    assert len(timings) == 2 and all(t >= 0 for t in timings)


def test_a_sum_or_a_vector_of_another_length_is_not_an_upload(client_scheme: HEScheme[Any]) -> None:
    one = client_scheme.encrypt(np.zeros(LENGTH))
    two = client_scheme.sum([one, client_scheme.encrypt(np.zeros(LENGTH))])

    with pytest.raises(BadCiphertextError, match="sum of 2") as summed:
        parse_upload(client_scheme, client_scheme.serialize(two), length=LENGTH)
    with pytest.raises(BadCiphertextError) as longer:
        parse_upload(client_scheme, client_scheme.serialize(one), length=LENGTH + 1)

    assert summed.value.code is ErrorCode.BAD_CIPHERTEXT and longer.value.field == "ciphertext"
