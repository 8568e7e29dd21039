"""Build the `HEScheme` that a `FederationSpec`'s parameters call for: a registry from `HEKind` to backend.

Adding a scheme is its parameters in `params.py`, its backend class, and one entry in `SCHEMES`.
"""

from __future__ import annotations

from typing import Any

from protocol.crypto.base import AnyParams, HEScheme
from protocol.crypto.ckks import CKKSScheme
from protocol.crypto.paillier import PaillierScheme
from protocol.crypto.params import HEKind
from protocol.crypto.plain import PlainScheme

SCHEMES: dict[HEKind, type[HEScheme[Any]]] = {
    scheme.kind: scheme for scheme in (CKKSScheme, PaillierScheme, PlainScheme)
}


def scheme_for(params: AnyParams) -> type[HEScheme[Any]]:
    """The backend class for these parameters."""
    kind = getattr(params, "kind", None)
    if not isinstance(kind, HEKind) or kind not in SCHEMES:
        raise TypeError(f"expected HE parameters, got {type(params).__name__}")
    return SCHEMES[kind]


def generate_scheme(params: AnyParams) -> HEScheme[Any]:
    """A new key pair (the cloud does this once per federation)."""
    return scheme_for(params).generate(params)


def scheme_from_public(params: AnyParams, public_bytes: bytes) -> HEScheme[Any]:
    """What clients and edges hold: encrypt, add and (de)serialise, never decrypt."""
    return scheme_for(params).from_public(params, public_bytes)


def scheme_from_secret(params: AnyParams, secret_bytes: bytes) -> HEScheme[Any]:
    """The cloud's scheme, from `HEScheme.secret_bytes()` (usually via `keystore.open_secret`)."""
    return scheme_for(params).from_secret(params, secret_bytes)
