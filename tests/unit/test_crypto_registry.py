"""The crypto factory is a registry from `HEKind` to backend: each kind of parameters builds its own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from protocol.crypto import (
    CKKSParams,
    CKKSScheme,
    HEKind,
    PaillierParams,
    PaillierScheme,
    PlainParams,
    PlainScheme,
    generate_scheme,
    scheme_for,
    scheme_from_public,
    scheme_from_secret,
)
from protocol.crypto.factory import SCHEMES


def test_every_scheme_kind_has_one_backend() -> None:
    assert set(SCHEMES) == set(HEKind)
    assert {HEKind.CKKS: CKKSScheme, HEKind.PAILLIER: PaillierScheme, HEKind.NONE: PlainScheme} == SCHEMES


@pytest.mark.parametrize(
    ("params", "backend"),
    [
        (CKKSParams(), CKKSScheme),
        (PaillierParams(), PaillierScheme),
        (PlainParams(), PlainScheme),
    ],
    ids=["ckks", "paillier", "none"],
)
def test_each_kind_of_parameters_builds_its_backend_from_fresh_public_and_secret_keys(
    params: Any, backend: type
) -> None:
    # Prepare
    x = np.array([0.25, -0.5, 0.125])
    # Execute
    scheme = generate_scheme(params)
    public = scheme_from_public(params, scheme.public_bytes())
    secret = scheme_from_secret(params, scheme.secret_bytes())
    # Assert
    assert scheme_for(params) is backend
    assert [type(s) for s in (scheme, public, secret)] == [backend] * 3
    assert not public.has_secret_key or backend is PlainScheme
    assert np.allclose(secret.decrypt(public.encrypt(x)), x, atol=1e-3)


def test_what_is_not_he_parameters_is_refused() -> None:
    with pytest.raises(TypeError, match="expected HE parameters, got dict"):
        scheme_for({"kind": "ckks"})  # type: ignore[arg-type]
