"""Build the `HEScheme` that a `FederationSpec`'s parameters call for."""

from __future__ import annotations

from typing import Any

from protocol.crypto.base import AnyParams, HEScheme
from protocol.crypto.ckks import CKKSScheme
from protocol.crypto.paillier import PaillierScheme
from protocol.crypto.params import CKKSParams, PaillierParams, PlainParams
from protocol.crypto.plain import PlainScheme


def scheme_for(params: AnyParams) -> type[HEScheme[Any]]:
    """The backend class for these parameters."""
    if isinstance(params, CKKSParams):
        return CKKSScheme
    if isinstance(params, PaillierParams):
        return PaillierScheme
    if isinstance(params, PlainParams):
        return PlainScheme
    raise TypeError(f"expected HE parameters, got {type(params).__name__}")


def generate_scheme(params: AnyParams) -> HEScheme[Any]:
    """A new key pair (the cloud does this once per federation)."""
    if isinstance(params, CKKSParams):
        return CKKSScheme.generate(params)
    if isinstance(params, PaillierParams):
        return PaillierScheme.generate(params)
    return PlainScheme.generate(_plain(params))


def scheme_from_public(params: AnyParams, public_bytes: bytes) -> HEScheme[Any]:
    """What clients and edges hold: encrypt, add and (de)serialise, never decrypt."""
    if isinstance(params, CKKSParams):
        return CKKSScheme.from_public(params, public_bytes)
    if isinstance(params, PaillierParams):
        return PaillierScheme.from_public(params, public_bytes)
    return PlainScheme.from_public(_plain(params), public_bytes)


def scheme_from_secret(params: AnyParams, secret_bytes: bytes) -> HEScheme[Any]:
    """The cloud's scheme, from `HEScheme.secret_bytes()` (usually via `keystore.open_secret`)."""
    if isinstance(params, CKKSParams):
        return CKKSScheme.from_secret(params, secret_bytes)
    if isinstance(params, PaillierParams):
        return PaillierScheme.from_secret(params, secret_bytes)
    return PlainScheme.from_secret(_plain(params), secret_bytes)


def _plain(params: object) -> PlainParams:
    if not isinstance(params, PlainParams):
        raise TypeError(f"expected HE parameters, got {type(params).__name__}")
    return params
