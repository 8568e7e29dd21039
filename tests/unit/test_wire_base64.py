"""`is_padded_base64` gives the same answer as the pattern the JSON schema states (`base64_pattern`), which
it replaces in the validators for speed: over seeded random texts near the pattern's edges and over the
cases that each rule of the pattern refuses."""

from __future__ import annotations

import base64
import random
import re

import pytest

from protocol.wire_schema import base64_pattern, is_padded_base64

BOUNDS = [(0, 64), (1, 1_000), (32, 32), (33, 33), (34, 34), (64, 64)]
EDGES = ["", "=", "==", "A===", "QQ==", "QR==", "QUE=", "QUF=", "QUFB", "QUF", "Q+/=", "Q-_=", "+/-_", "ab=c"]


def texts(rng: random.Random) -> list[str]:
    """Valid encodings (both alphabets) of random lengths, and each with one symbol changed, cut or padded."""
    found = list(EDGES)
    for _ in range(300):
        raw = rng.randbytes(rng.choice([0, 1, 2, 3, 31, 32, 33, 34, 35, 64, rng.randrange(200)]))
        text = rng.choice([base64.b64encode, base64.urlsafe_b64encode])(raw).decode()
        found.append(text)
        if text:
            i = rng.randrange(len(text))
            found.append(text[:i] + rng.choice("A/+_-=Qw!") + text[i + 1 :])
            found.append(text[:-1])
            found.append(text + "=")
    return found


@pytest.mark.parametrize(("min_bytes", "max_bytes"), BOUNDS)
def test_the_fast_check_answers_as_the_schemas_pattern(min_bytes: int, max_bytes: int) -> None:
    pattern = re.compile(base64_pattern(min_bytes, max_bytes))
    for text in texts(random.Random(min_bytes * 1000 + max_bytes)):
        expected = pattern.fullmatch(text) is not None
        assert is_padded_base64(text, min_bytes=min_bytes, max_bytes=max_bytes) is expected, text
