"""Additively homomorphic encryption for fedlora's secure aggregation.

Clients `encrypt` with the federation's public key, edges `add` without any secret, the cloud `decrypt`s
only the sum. One interface (`HEScheme`), three backends (CKKS, packed Paillier, plaintext), one wire
envelope, one error family (`CryptoError`).

    scheme = generate_scheme(CKKSParams())                   # cloud, once
    edge = scheme_from_public(params, scheme.public_bytes())  # clients and edges
    total = edge.sum(edge.deserialize(b, expected_length=n) for b in uploads)
    values = scheme.decrypt(scheme.deserialize(edge.serialize(total)))
"""

from protocol.crypto.base import AnyParams, EncryptedVector, HEScheme, key_fingerprint
from protocol.crypto.ckks import CKKSScheme
from protocol.crypto.errors import (
    CiphertextError,
    CryptoError,
    DecryptionRangeError,
    DecryptionWorkerError,
    KeyBindingError,
    KeyMaterialError,
    KeyStoreError,
    MissingSecretKeyError,
    PackingError,
    WorkersUnavailableError,
    WrongKekError,
)
from protocol.crypto.factory import generate_scheme, scheme_for, scheme_from_public, scheme_from_secret
from protocol.crypto.kek_ring import KekRing, kek_id
from protocol.crypto.keystore import (
    derive_kek,
    open_bytes,
    open_secret,
    reseal_bytes,
    reseal_secret,
    seal_bytes,
    seal_secret,
    sealed_kek_id,
)
from protocol.crypto.obfuscators import ObfuscatorPool
from protocol.crypto.paillier import PaillierScheme
from protocol.crypto.params import CKKSParams, HEKind, HEParams, PaillierParams, PlainParams
from protocol.crypto.plain import PlainScheme

__all__ = [
    "AnyParams",
    "CKKSParams",
    "CKKSScheme",
    "CiphertextError",
    "CryptoError",
    "DecryptionRangeError",
    "DecryptionWorkerError",
    "EncryptedVector",
    "HEKind",
    "HEParams",
    "HEScheme",
    "KekRing",
    "KeyBindingError",
    "KeyMaterialError",
    "KeyStoreError",
    "MissingSecretKeyError",
    "ObfuscatorPool",
    "PackingError",
    "PaillierParams",
    "PaillierScheme",
    "PlainParams",
    "PlainScheme",
    "WorkersUnavailableError",
    "WrongKekError",
    "derive_kek",
    "generate_scheme",
    "kek_id",
    "key_fingerprint",
    "open_bytes",
    "open_secret",
    "reseal_bytes",
    "reseal_secret",
    "scheme_for",
    "scheme_from_public",
    "scheme_from_secret",
    "seal_bytes",
    "seal_secret",
    "sealed_kek_id",
]
