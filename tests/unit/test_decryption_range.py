"""Every decryption is range-checked before anything is released (issue 18, item 2; issue 20, item 5): a sum
of `count` encryptions holds values within `count * max_abs_value` plus the scheme's error bound, and short of
the point where the plaintext space wraps; anything outside (a crafted ciphertext, an overflow, a ciphertext
under another key) raises `DecryptionRangeError`. Schemes with an exact ring check tighter bounds when they
decode (tests/adversarial/test_masking.py)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from protocol.crypto import (
    CKKSParams,
    DecryptionRangeError,
    EncryptedVector,
    PackingError,
    PlainParams,
    generate_scheme,
)
from protocol.messages import CentralDPConfig, FederationSpec


def test_a_ckks_sum_outside_what_its_count_can_hold_is_refused() -> None:
    scheme = generate_scheme(CKKSParams())
    limit = scheme.max_abs_value
    honest = scheme.sum([scheme.encrypt(np.full(8, limit)), scheme.encrypt(np.full(8, limit))])
    values = scheme.decrypt(honest)
    assert np.allclose(scheme.in_range(values, count=2), 2 * limit)
    # The same values claimed as one encryption's: twice what one can hold.
    with pytest.raises(DecryptionRangeError, match="outside the"):
        scheme.in_range(values, count=1)
    with pytest.raises(DecryptionRangeError, match="value 0 is nan"):
        scheme.in_range(np.full(3, np.nan), count=1)


def test_a_ckks_sum_claiming_more_summands_than_the_range_holds_is_bounded_by_the_wrap_point() -> None:
    """A count past `max_summands` (which no honest sum reaches) cannot widen the bound past the wrap point:
    2^19 at the defaults (a 60-bit prime, scale 2^40), worked out from the parameters by hand."""
    scheme = generate_scheme(CKKSParams())
    assert scheme.wrap_bound == 2.0**19
    assert scheme.max_summands * scheme.max_abs_value <= scheme.wrap_bound / 2
    with pytest.raises(DecryptionRangeError, match="wraps"):
        scheme.in_range(np.array([2.0**19 + 1]), count=10**6)


def test_a_ckks_sum_that_wrapped_does_not_decrypt() -> None:
    """Three encryptions of 174,763 sum to 524,289, past the wrap point: the backend's plain decryption
    shows -524,287, `decrypt` refuses it."""
    scheme = generate_scheme(CKKSParams())
    third = scheme._encrypt(np.array([174_763.0]))
    wrapped = EncryptedVector(
        scheme.kind, scheme.fingerprint, 1, 3, scheme._add(scheme._add(third, third), third)
    )
    assert scheme._decrypt(wrapped, 1)[0] == pytest.approx(-524_287.0, abs=1e-3)
    with pytest.raises(DecryptionRangeError, match=r"value 0 is -52428[67]"):
        scheme.decrypt(wrapped)


def test_a_plaintext_sum_outside_what_its_count_can_hold_is_refused() -> None:
    """The plaintext scheme bounds a value as the others do (`PlainParams.clip`): a sum of two uploads holds
    at most twice the clip (plus float64 rounding); a finite 1e300, which overflows the float32 adapter, is
    refused like an infinity, and `encrypt` takes nothing outside the clip."""
    scheme = generate_scheme(PlainParams(clip=0.5))
    assert scheme.max_abs_value == 0.5
    assert scheme.in_range(np.array([1.0, -1.0]), count=2).tolist() == [1.0, -1.0]
    with pytest.raises(DecryptionRangeError, match=r"value 0 is 1\.0, outside the"):
        scheme.in_range(np.array([1.0]), count=1)
    with pytest.raises(DecryptionRangeError, match=r"value 1 is 1e\+300"):
        scheme.in_range(np.array([0.0, 1e300]), count=1)
    with pytest.raises(DecryptionRangeError, match="value 1 is inf"):
        scheme.in_range(np.array([0.0, np.inf]), count=2)
    with pytest.raises(PackingError, match="outside"):
        scheme.encrypt(np.array([0.75]))


def test_a_plaintext_clip_below_the_clip_norm_is_refused_and_the_default_is_bounded() -> None:
    """An honest hospital's clipped, weighted delta reaches `central_dp.clip_norm` in one coordinate, so a
    spec whose plaintext range is narrower is refused; the default range is finite (2^30, CKKS's)."""
    with pytest.raises(ValidationError, match=r"raise he.clip \(packed Paillier, plaintext\)"):
        FederationSpec(federation_id="f", he=PlainParams(clip=0.5), central_dp=CentralDPConfig(clip_norm=1.0))
    assert generate_scheme(PlainParams()).max_abs_value == 2.0**30
