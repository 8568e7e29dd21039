"""Errors of the homomorphic encryption layer.

Every error a peer can provoke with bytes it sends is a `CiphertextError`; library exceptions (TenSEAL's
`RuntimeError`, `struct.error`, ...) never leave this package, they are chained under one of these.
"""

from __future__ import annotations


class CryptoError(ValueError):
    """Base class of every error raised by `protocol.crypto`."""


class CiphertextError(CryptoError):
    """A ciphertext is malformed, truncated, made for another key, scheme or parameters, has the wrong
    length, or would overflow if added to."""


class MissingSecretKeyError(CryptoError):
    """Decryption (or export of the secret key) was asked of a scheme that holds only public material."""


class KeyMaterialError(CryptoError):
    """Public or secret key bytes are malformed or do not match the parameters."""


class KeyStoreError(CryptoError):
    """A sealed secret key cannot be opened: wrong key-encryption key, tampered or truncated bytes."""


class WrongKekError(KeyStoreError):
    """A sealed record names (by its KEK id) a key-encryption key this process does not hold: its KEK was
    rotated away, or the process was started with another federation's KEK."""


class KeyBindingError(KeyStoreError):
    """A sealed secret key was asked for under another federation, or beside another public key, than the
    ones it was sealed for: the store holds key material that is not the federation's."""


class PackingError(CryptoError):
    """A plaintext cannot be encoded (outside the clip, not finite) or a decrypted sum does not decode."""


class DecryptionRangeError(CryptoError):
    """A decrypted sum holds a value no honest sum of its count can: past what its encryptions can add up
    to, or past the point where the scheme's plaintexts wrap (a crafted or overflowed ciphertext, or one
    made under another key). Nothing of such a sum may be released."""


class DecryptionWorkerError(RuntimeError):
    """A worker process that decrypts a share of a sum failed or died (killed, out of memory): nothing was
    decrypted and nothing is wrong with the sum, so the same decryption may be tried again. Not a
    `CryptoError`, which says the ciphertext or the key is at fault."""


class WorkersUnavailableError(DecryptionWorkerError):
    """No decryption worker process could start (a process limit reached: `fork`/`spawn` failing with
    EAGAIN, or every worker dying before it ran): nothing was decrypted, and the caller, which holds the key,
    can decrypt in its own process instead."""
