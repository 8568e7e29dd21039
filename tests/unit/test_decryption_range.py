"""Every decryption is range-checked before anything is released (issue 18, item 2): a sum of `count`
encryptions holds values within `count * max_abs_value` plus the scheme's error bound; anything outside
(a crafted ciphertext, an overflow) is refused. Schemes with an exact ring check tighter bounds when they
decode (tests/adversarial/test_masking.py)."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.aggregation import in_range
from protocol.crypto import CKKSParams, CryptoError, PlainParams, generate_scheme


def test_a_ckks_sum_outside_what_its_count_can_hold_is_refused() -> None:
    scheme = generate_scheme(CKKSParams())
    limit = scheme.max_abs_value
    honest = scheme.sum([scheme.encrypt(np.full(8, limit)), scheme.encrypt(np.full(8, limit))])
    values = scheme.decrypt(honest)
    assert np.allclose(in_range(scheme, values, count=2), 2 * limit)
    # The same values claimed as one encryption's: twice what one can hold.
    with pytest.raises(CryptoError, match="outside the"):
        in_range(scheme, values, count=1)
    with pytest.raises(CryptoError, match="value 0 is nan"):
        in_range(scheme, np.full(3, np.nan), count=1)


def test_a_scheme_without_a_range_takes_any_finite_sum() -> None:
    scheme = generate_scheme(PlainParams())
    assert in_range(scheme, np.array([1e300, -1e300]), count=1).tolist() == [1e300, -1e300]
