"""The contract every `HEScheme` backend passes, run on real TenSEAL, real phe/gmpy2 and the plain scheme.

`HESchemeContract` holds the tests; each backend subclass only says how to make its parameters (the
abstract factory). Expected values are numpy sums of the inputs, or quantised by hand for Paillier.
"""

from __future__ import annotations

import contextlib
import struct
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import gmpy2
import numpy as np
import pytest
import tenseal as ts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.crypto import (
    AnyParams,
    CiphertextError,
    CKKSParams,
    CryptoError,
    EncryptedVector,
    HEScheme,
    KeyMaterialError,
    MissingSecretKeyError,
    PackingError,
    PaillierParams,
    PaillierScheme,
    PlainParams,
    envelope,
    generate_scheme,
    scheme_from_public,
    scheme_from_secret,
)

SEED = 20261122
FAST = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)

# Offsets into the envelope header, written out by hand from the layout in envelope.py's docstring.
AT_VERSION, AT_SCHEME, AT_FLAGS, AT_LENGTH, AT_COUNT, AT_CHUNKS, HEADER = 4, 5, 6, 40, 48, 52, 56


def _vectors(seed: int, n: int, length: int, bound: float) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-bound, bound, length) for _ in range(n)]


def _with_u32(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + struct.pack(">I", value) + data[at + 4 :]


class HESchemeContract(ABC):
    """Tests every backend must pass. Subclasses implement `make_params` and `foreign_params`."""

    #: values are drawn from [-bound, bound]
    bound: ClassVar[float] = 1.0

    @classmethod
    @abstractmethod
    def make_params(cls) -> AnyParams:
        """Parameters of the backend under test (the abstract factory)."""

    @classmethod
    @abstractmethod
    def foreign_params(cls) -> AnyParams:
        """Parameters of some *other* scheme kind, to make ciphertexts this backend must refuse."""

    @pytest.fixture(scope="class")
    @classmethod
    def params(cls) -> AnyParams:
        return cls.make_params()

    @pytest.fixture(scope="class")
    @classmethod
    def scheme(cls, params: AnyParams) -> HEScheme[Any]:
        return generate_scheme(params)

    @pytest.fixture(scope="class")
    @classmethod
    def public(cls, scheme: HEScheme[Any], params: AnyParams) -> HEScheme[Any]:
        return scheme_from_public(params, scheme.public_bytes())

    @pytest.fixture(scope="class")
    @classmethod
    def other_key(cls, params: AnyParams) -> HEScheme[Any]:
        return generate_scheme(params)

    @pytest.fixture(scope="class")
    @classmethod
    def other_kind(cls) -> HEScheme[Any]:
        return generate_scheme(cls.foreign_params())

    @pytest.fixture(scope="class")
    @classmethod
    def wire(cls, public: HEScheme[Any]) -> bytes:
        """A serialised ciphertext of two chunks (slots + 3 values)."""
        (x,) = _vectors(SEED, 1, public.slots + 3, cls.bound)
        return public.serialize(public.encrypt(x))

    # -- correctness --------------------------------------------------------------------------------
    @FAST
    @given(data=st.data(), clients=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
    def test_decrypted_sum_equals_sum_of_inputs(
        self, scheme: HEScheme[Any], public: HEScheme[Any], data: st.DataObject, clients: int, seed: int
    ) -> None:
        # Prepare
        length = data.draw(st.integers(1, 2 * public.slots + 1), label="length")
        xs = _vectors(seed, clients, length, self.bound)
        expected = np.sum(np.stack(xs), axis=0)
        # Execute
        total = public.sum(public.encrypt(x) for x in xs)
        got = scheme.decrypt(total)
        # Assert
        assert (total.length, total.count) == (length, clients)
        assert got.dtype == np.float64 and got.shape == (length,)
        assert np.max(np.abs(got - expected)) <= scheme.error_bound(count=clients, max_abs=self.bound)

    @pytest.mark.parametrize("extra", [-1, 0, 1, "2x"])
    def test_lengths_at_slot_boundaries(
        self, scheme: HEScheme[Any], public: HEScheme[Any], extra: int | str
    ) -> None:
        length = 2 * public.slots if extra == "2x" else public.slots + int(extra)
        xs = _vectors(SEED + length, 2, length, self.bound)
        for x in xs:  # the extreme values at both ends of every chunk
            x[:: public.slots] = self.bound
            x[public.slots - 1 :: public.slots] = -self.bound
            x[-1] = self.bound
        expected = xs[0] + xs[1]

        got = scheme.decrypt(public.add(public.encrypt(xs[0]), public.encrypt(xs[1])))

        assert got.shape == (length,)
        assert np.max(np.abs(got - expected)) <= scheme.error_bound(count=2, max_abs=self.bound)

    def test_add_leaves_inputs_alone_and_add_into_streams_the_same_sum(
        self, scheme: HEScheme[Any], public: HEScheme[Any]
    ) -> None:
        xs = _vectors(SEED, 3, 50, self.bound)
        cts = [public.encrypt(x) for x in xs]

        pair = public.add(cts[0], cts[1])
        acc = public.sum([cts[0]])  # a copy: streaming into it must not change cts[0]
        for ct in cts[1:]:
            public.add_into(acc, ct)

        bound = scheme.error_bound(count=3, max_abs=self.bound)
        assert [ct.count for ct in cts] == [1, 1, 1] and pair.count == 2 and acc.count == 3
        assert np.max(np.abs(scheme.decrypt(cts[0]) - xs[0])) <= bound
        assert np.max(np.abs(scheme.decrypt(pair) - xs[0] - xs[1])) <= bound
        assert np.max(np.abs(scheme.decrypt(acc) - np.sum(np.stack(xs), axis=0))) <= bound

    def test_sum_of_nothing_is_refused(self, public: HEScheme[Any]) -> None:
        with pytest.raises(CryptoError, match="empty"):
            public.sum([])

    # -- keys ---------------------------------------------------------------------------------------
    def test_public_only_scheme_cannot_decrypt(self, scheme: HEScheme[Any], public: HEScheme[Any]) -> None:
        (x,) = _vectors(SEED, 1, 10, self.bound)
        ct = public.encrypt(x)
        assert public.fingerprint == scheme.fingerprint
        assert np.max(np.abs(scheme.decrypt(ct) - x)) <= scheme.error_bound(count=1, max_abs=self.bound)
        if not scheme.requires_secret_to_decrypt:  # the plaintext scheme: reading is the point
            assert public.has_secret_key and np.array_equal(public.decrypt(ct), x)
            return
        assert scheme.has_secret_key and not public.has_secret_key
        with pytest.raises(MissingSecretKeyError):
            public.decrypt(ct)
        with pytest.raises(MissingSecretKeyError):
            public.secret_bytes()

    def test_secret_bytes_rebuild_the_same_scheme(self, scheme: HEScheme[Any], params: AnyParams) -> None:
        (x,) = _vectors(SEED, 1, 10, self.bound)
        rebuilt = scheme_from_secret(params, scheme.secret_bytes())

        assert rebuilt.fingerprint == scheme.fingerprint and rebuilt.has_secret_key
        assert np.max(np.abs(rebuilt.decrypt(scheme.encrypt(x)) - x)) <= scheme.error_bound(
            count=1, max_abs=self.bound
        )

    def test_fingerprint_is_32_bytes_and_differs_between_keys(
        self, scheme: HEScheme[Any], other_key: HEScheme[Any]
    ) -> None:
        assert len(scheme.fingerprint) == 32
        assert scheme.fingerprint != other_key.fingerprint

    # -- wire format --------------------------------------------------------------------------------
    def test_serialize_round_trip_through_an_edge(self, scheme: HEScheme[Any], public: HEScheme[Any]) -> None:
        xs = _vectors(SEED, 4, public.slots + 5, self.bound)
        uploads = [public.serialize(public.encrypt(x)) for x in xs]

        edge_sum = public.sum(public.deserialize(u, expected_length=len(xs[0])) for u in uploads)
        at_cloud = scheme.deserialize(public.serialize(edge_sum), expected_length=len(xs[0]))

        assert (at_cloud.length, at_cloud.count) == (len(xs[0]), 4)
        got = scheme.decrypt(at_cloud)
        assert np.max(np.abs(got - np.sum(np.stack(xs), axis=0))) <= scheme.error_bound(
            count=4, max_abs=self.bound
        )

    def test_serialising_a_parsed_ciphertext_gives_its_bytes_back(self, public: HEScheme[Any]) -> None:
        """The cloud's replay registry digests `serialize(deserialize(raw))`: the same bytes for a fresh
        upload and for a sum, so an honest party's digest is the digest of what it sent."""
        xs = _vectors(SEED, 2, public.slots + 3, self.bound)
        upload = public.serialize(public.encrypt(xs[0]))
        total = public.serialize(public.sum(public.encrypt(x) for x in xs))

        for raw in (upload, total):
            assert public.serialize(public.deserialize(raw, expected_length=len(xs[0]))) == raw

    @pytest.mark.parametrize(
        "corrupt",
        [
            "empty",
            "garbage",
            "garbage_of_the_same_size",
            "header_cut",
            "table_cut",
            "payload_cut",
            "half",
            "extra_byte",
            "magic",
            "version",
            "scheme_code",
            "flags",
            "count_zero",
            "length_zero",
            "length_of_other_chunk_count",
            "chunk_count",
            "chunk_size",
        ],
    )
    def test_malformed_bytes_raise_ciphertext_error(
        self, public: HEScheme[Any], wire: bytes, corrupt: str
    ) -> None:
        rng = np.random.default_rng(SEED)
        bad = {
            "empty": b"",
            "garbage": rng.bytes(1000),
            "garbage_of_the_same_size": rng.bytes(len(wire)),
            "header_cut": wire[:30],
            "table_cut": wire[: HEADER + 2],
            "payload_cut": wire[:-1],
            "half": wire[: len(wire) // 2],
            "extra_byte": wire + b"\x00",
            "magic": b"X" + wire[1:],
            "version": wire[:AT_VERSION] + b"\x63" + wire[AT_VERSION + 1 :],
            "scheme_code": wire[:AT_SCHEME] + b"\x4d" + wire[AT_SCHEME + 1 :],
            "flags": wire[:AT_FLAGS] + b"\x00\x01" + wire[AT_FLAGS + 2 :],
            "count_zero": _with_u32(wire, AT_COUNT, 0),
            "length_zero": wire[:AT_LENGTH] + bytes(8) + wire[AT_LENGTH + 8 :],
            "length_of_other_chunk_count": wire[:AT_LENGTH]
            + struct.pack(">Q", 3 * public.slots)
            + wire[AT_LENGTH + 8 :],
            "chunk_count": _with_u32(wire, AT_CHUNKS, 3),
            "chunk_size": _with_u32(wire, HEADER, struct.unpack_from(">I", wire, HEADER)[0] + 1),
        }[corrupt]

        with pytest.raises(CiphertextError):
            public.deserialize(bad)

    def test_count_above_the_limit_in_a_header_is_refused(self, public: HEScheme[Any], wire: bytes) -> None:
        if public.max_summands >= envelope.MAX_COUNT:
            pytest.skip("the header field cannot hold more than this scheme's limit")
        with pytest.raises(CiphertextError, match="sum of"):
            public.deserialize(_with_u32(wire, AT_COUNT, public.max_summands + 1))

    def test_ciphertext_from_another_key_is_refused(
        self, public: HEScheme[Any], other_key: HEScheme[Any]
    ) -> None:
        (x,) = _vectors(SEED, 1, 20, self.bound)
        foreign = other_key.encrypt(x)

        with pytest.raises(CiphertextError, match="fingerprint"):
            public.deserialize(other_key.serialize(foreign))
        with pytest.raises(CiphertextError, match="fingerprint"):
            public.add(public.encrypt(x), foreign)

    def test_ciphertext_of_another_scheme_is_refused(
        self, public: HEScheme[Any], other_kind: HEScheme[Any]
    ) -> None:
        (x,) = _vectors(SEED, 1, 20, min(self.bound, other_kind.max_abs_value))
        foreign = other_kind.encrypt(x)

        with pytest.raises(CiphertextError, match="this federation uses"):
            public.deserialize(other_kind.serialize(foreign))
        with pytest.raises(CiphertextError):
            public.add(public.encrypt(x), foreign)

    def test_unexpected_length_is_refused(self, public: HEScheme[Any], wire: bytes) -> None:
        with pytest.raises(CiphertextError, match="expected"):
            public.deserialize(wire, expected_length=public.slots + 4)

    def test_random_chunk_bodies_under_a_valid_header_never_escape_as_library_errors(
        self, scheme: HEScheme[Any], wire: bytes
    ) -> None:
        rng = np.random.default_rng(SEED)
        sizes = struct.unpack_from(">2I", wire, HEADER)
        forged = envelope.encode(
            kind=scheme.kind,
            fingerprint=scheme.fingerprint,
            length=scheme.slots + 3,
            count=1,
            chunks=[rng.bytes(size) for size in sizes],
        )
        try:
            ct = scheme.deserialize(forged)
        except CiphertextError:
            return
        with contextlib.suppress(
            CryptoError
        ):  # some random bodies are valid ciphertexts of random plaintexts
            scheme.decrypt(ct)

    @settings(FAST, max_examples=30)
    @given(flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=4))
    def test_bit_flips_raise_crypto_errors_or_decode(
        self, scheme: HEScheme[Any], wire: bytes, flips: list[tuple[int, int]]
    ) -> None:
        data = bytearray(wire)
        for position, mask in flips:
            # half the flips land in the header and chunk table, where they must be caught
            data[position % (HEADER + 8) if position % 2 else position % len(data)] ^= mask
        with contextlib.suppress(CryptoError):
            scheme.decrypt(scheme.deserialize(bytes(data)))

    # -- mismatches and limits ----------------------------------------------------------------------
    def test_adding_ciphertexts_of_different_lengths_is_refused_and_changes_nothing(
        self, scheme: HEScheme[Any], public: HEScheme[Any]
    ) -> None:
        a, b = public.encrypt(np.full(10, 0.5)), public.encrypt(np.full(11, 0.5))

        with pytest.raises(CiphertextError, match="10 and 11"):
            public.add(a, b)
        with pytest.raises(CiphertextError):
            public.add_into(a, b)

        assert a.count == 1
        assert np.max(np.abs(scheme.decrypt(a) - 0.5)) <= scheme.error_bound(count=1, max_abs=0.5)

    def test_summand_limit(self, public: HEScheme[Any]) -> None:
        ct = public.encrypt(np.zeros(3))
        while 2 * ct.count <= public.max_summands:
            ct = public.add(ct, ct)
        assert ct.count > public.max_summands // 2

        with pytest.raises(CiphertextError, match="at most"):
            public.add(ct, ct)
        with pytest.raises(CiphertextError, match="at most"):
            public.add_into(ct, ct)

    @pytest.mark.parametrize(
        "bad", [np.array([0.1, np.nan]), np.array([np.inf]), np.zeros((2, 2)), np.zeros(0), np.array(["a"])]
    )
    def test_unencodable_plaintexts_raise_packing_error(self, public: HEScheme[Any], bad: np.ndarray) -> None:
        with pytest.raises(PackingError):
            public.encrypt(bad)

    def test_values_outside_the_range_raise_unless_clipped(
        self, scheme: HEScheme[Any], public: HEScheme[Any]
    ) -> None:
        limit = public.max_abs_value
        if limit == np.inf:
            pytest.skip("this scheme encodes any finite value")
        x = np.array([0.0, 1.5 * limit, -0.5 * limit, -2 * limit])

        with pytest.raises(PackingError, match="value 1"):
            public.encrypt(x)
        got = scheme.decrypt(public.encrypt(public.clip_vector(x)))

        expected = np.array([0.0, limit, -0.5 * limit, -limit])
        assert np.max(np.abs(got - expected)) <= scheme.error_bound(count=1, max_abs=limit)


class TestCKKS(HESchemeContract):
    @classmethod
    def make_params(cls) -> AnyParams:
        return CKKSParams()

    @classmethod
    def foreign_params(cls) -> AnyParams:
        return PlainParams()

    def test_public_context_has_no_secret_and_tenseal_itself_refuses_to_decrypt(
        self, public: HEScheme[Any]
    ) -> None:
        context = ts.context_from(public.public_bytes())

        assert not context.is_private() and not context.has_secret_key()
        assert not context.has_relin_keys() and not context.has_galois_keys()
        with pytest.raises(ValueError, match="secret"):
            ts.ckks_vector(context, [1.0, 2.0]).decrypt()

    def test_secret_context_offered_as_public_is_refused(
        self, scheme: HEScheme[Any], params: AnyParams
    ) -> None:
        with pytest.raises(KeyMaterialError, match="secret key"):
            scheme_from_public(params, scheme.secret_bytes())

    @pytest.mark.parametrize(
        ("other", "reason"),
        [
            (CKKSParams(coeff_mod_bit_sizes=(60, 40)), "parameters need"),
            (CKKSParams(global_scale_bits=30), "parameters need"),
            (CKKSParams(poly_modulus_degree=16384), "bytes, at most"),
        ],
    )
    def test_context_of_other_parameters_is_refused(self, other: CKKSParams, reason: str) -> None:
        with pytest.raises(KeyMaterialError, match=reason):
            scheme_from_public(CKKSParams(), generate_scheme(other).public_bytes())

    def test_error_bound_holds_at_full_range_for_many_clients(self, scheme: HEScheme[Any]) -> None:
        limit = scheme.max_abs_value
        xs = _vectors(SEED, 64, scheme.slots, limit)

        got = scheme.decrypt(scheme.sum(scheme.encrypt(x) for x in xs))

        assert limit == 64.0  # 2^(60 - 40 - 2 - log2(4096)), see ckks.py
        assert np.max(np.abs(got - np.sum(np.stack(xs), axis=0))) <= scheme.error_bound(
            count=64, max_abs=limit
        )

    @pytest.mark.parametrize(
        ("degree", "bits", "scale"), [(4096, [40, 40], 30), (8192, [60, 40, 60], 40), (8192, [60, 60], 30)]
    )
    def test_chunks_of_other_parameters_under_our_header_are_refused(
        self, scheme: HEScheme[Any], degree: int, bits: list[int], scale: int
    ) -> None:
        context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=degree, coeff_mod_bit_sizes=bits)
        context.global_scale = 2.0**scale
        body = ts.ckks_vector(context, [1.0, 2.0]).serialize()
        forged = envelope.encode(
            kind=scheme.kind, fingerprint=scheme.fingerprint, length=2, count=1, chunks=[body]
        )

        with pytest.raises(CiphertextError, match="chunk 0"):
            scheme.deserialize(forged)


class TestPaillier(HESchemeContract):
    @classmethod
    def make_params(cls) -> AnyParams:
        return PaillierParams()

    @classmethod
    def foreign_params(cls) -> AnyParams:
        return CKKSParams()

    @staticmethod
    def _quantised(x: np.ndarray, params: PaillierParams) -> np.ndarray:
        """Fixed-point integers, computed here from the definition: round(x / (clip / (2^(q-1) - 1)))."""
        return np.array(
            [round(v * (2 ** (params.quant_bits - 1) - 1) / params.clip) for v in x], dtype=np.int64
        )

    @pytest.mark.parametrize("pattern", ["all_plus", "all_minus", "alternating"])
    def test_64_clients_at_the_clip_bound_sum_exactly(
        self, scheme: PaillierScheme, public: PaillierScheme, pattern: str
    ) -> None:
        # Prepare: 2 chunks + 1 value, every value at +clip or -clip
        params = scheme.params
        length = 2 * params.slots + 1
        signs = {
            "all_plus": lambda i: np.ones(length),
            "all_minus": lambda i: -np.ones(length),
            "alternating": lambda i: np.where((np.arange(length) + i) % 3 == 0, 1.0, -1.0),
        }[pattern]
        xs = [params.clip * signs(i) for i in range(64)]
        expected_q = sum(self._quantised(x, params) for x in xs)
        # Execute
        total = public.sum(public.encrypt(x) for x in xs)
        got = scheme.decrypt(scheme.deserialize(public.serialize(total)))
        # Assert: exact, including the slot at the maximum 64 * 2 * offset when all are +clip
        assert total.count == 64
        assert np.array_equal(got, expected_q.astype(np.float64) * params.step)

        with pytest.raises(CiphertextError, match="65 encryptions"):
            public.add(total, public.encrypt(xs[0]))

    def test_understated_count_is_detected_on_decrypt(
        self, scheme: PaillierScheme, public: PaillierScheme
    ) -> None:
        x = np.full(public.slots, public.params.clip)
        wire = public.serialize(public.sum(public.encrypt(x) for _ in range(3)))

        lying = scheme.deserialize(_with_u32(wire, AT_COUNT, 1))

        with pytest.raises(PackingError, match="more summands"):
            scheme.decrypt(lying)

    @pytest.mark.parametrize("extra", [-1, 0, 1])
    @pytest.mark.parametrize("value", [1.0, -1.0, 0.0, 0.4999])
    def test_packing_round_trips_exactly_at_clip_and_slot_boundaries(
        self, scheme: PaillierScheme, extra: int, value: float
    ) -> None:
        params = scheme.params
        x = np.full(params.slots + extra, value * params.clip)
        x[::2] *= -1

        got = scheme.decrypt(scheme.encrypt(x))

        assert np.array_equal(got, self._quantised(x, params).astype(np.float64) * params.step)

    @FAST
    @given(clients=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
    def test_quantisation_error_is_at_most_half_a_step_per_summand(
        self, scheme: PaillierScheme, clients: int, seed: int
    ) -> None:
        xs = _vectors(seed, clients, 60, scheme.params.clip)

        got = scheme.decrypt(scheme.sum(scheme.encrypt(x) for x in xs))

        tolerance = clients * scheme.params.step / 2 * (1 + 1e-9)
        assert np.max(np.abs(got - np.sum(np.stack(xs), axis=0))) <= tolerance

    def test_obfuscator_pool_gives_the_same_decryptions_and_never_reuses(
        self, scheme: PaillierScheme, params: AnyParams
    ) -> None:
        # Prepare: a fresh public scheme with its own pool, filled for two vectors of 3 chunks
        client = scheme_from_public(params, scheme.public_bytes())
        assert isinstance(client, PaillierScheme)
        length = 3 * client.slots
        client.precompute(length)
        client.precompute(length)
        assert len(client.pool) == 6
        x = np.zeros(length)  # equal plaintexts: equal ciphertexts would mean a reused obfuscator
        # Execute
        first, second = client.encrypt(x), client.encrypt(x)
        inline = client.encrypt(x)  # pool empty: computed inline
        # Assert
        assert len(client.pool) == 0
        ints = [int(c) for ct in (first, second, inline) for c in ct.payload]
        assert len(set(ints)) == len(ints) == 9
        for ct in (first, second, inline):
            assert np.array_equal(scheme.decrypt(ct), x)
        # The obfuscator of each ciphertext is c / (1 + n m) with m the packed offsets: all distinct.
        n = int.from_bytes(scheme.public_bytes(), "big")
        offset = 2 ** (scheme.params.quant_bits - 1) - 1
        m = sum(offset << (i * scheme.params.slot_bits) for i in range(scheme.slots))
        obfuscators = {c * int(gmpy2.invert(1 + n * m, n * n)) % (n * n) for c in ints}
        assert len(obfuscators) == 9

    def test_chunks_outside_the_ciphertext_group_are_refused(self, scheme: PaillierScheme) -> None:
        n = int.from_bytes(scheme.public_bytes(), "big")
        width = (2 * scheme.params.key_bits) // 8
        for value, reason in [(0, r"\[1, n\^2\)"), (n * n, r"\[1, n\^2\)"), (n, "invertible")]:
            forged = envelope.encode(
                kind=scheme.kind,
                fingerprint=scheme.fingerprint,
                length=3,
                count=1,
                chunks=[value.to_bytes(width, "big")],
            )
            with pytest.raises(CiphertextError, match=reason):
                scheme.deserialize(forged)

    def test_a_chunk_sharing_a_factor_with_n_is_refused_among_good_ones(self, scheme: PaillierScheme) -> None:
        """The chunks are checked invertible together (one gcd of their product with n): one that is not, in
        the middle of good ones, is still refused, and named."""
        size = scheme.params.key_bits // 8
        p = int.from_bytes(scheme.secret_bytes()[size : 2 * size], "big")
        width = (2 * scheme.params.key_bits) // 8
        good = scheme.encrypt(np.zeros(3 * scheme.slots)).payload
        chunks = [int(c).to_bytes(width, "big") for c in good]
        chunks[1] = (3 * p).to_bytes(width, "big")
        forged = envelope.encode(
            kind=scheme.kind, fingerprint=scheme.fingerprint, length=3 * scheme.slots, count=1, chunks=chunks
        )
        with pytest.raises(CiphertextError, match="chunk 1 is not invertible"):
            scheme.deserialize(forged)

    def test_public_bytes_are_n_alone(self, scheme: PaillierScheme, params: AnyParams) -> None:
        secret = scheme.secret_bytes()
        size = scheme.params.key_bits // 8
        n, p, q = (int.from_bytes(secret[i * size : (i + 1) * size], "big") for i in range(3))

        assert scheme.public_bytes() == n.to_bytes(size, "big") and p * q == n
        for prime in (p, q):
            assert prime.to_bytes((prime.bit_length() + 7) // 8, "big") not in scheme.public_bytes()
        with pytest.raises(KeyMaterialError):
            scheme_from_public(params, secret)

    def test_inconsistent_secret_key_is_refused(self, scheme: PaillierScheme, params: AnyParams) -> None:
        secret = bytearray(scheme.secret_bytes())
        secret[-1] ^= 2  # q changes, p * q != n
        with pytest.raises(KeyMaterialError, match="distinct primes"):
            scheme_from_secret(params, bytes(secret))

    def test_default_2048_bit_key_at_the_clip_bound(self) -> None:
        # Prepare: the production parameters, 64 clients, one full chunk each
        params = PaillierParams()
        scheme = generate_scheme(params)
        assert isinstance(scheme, PaillierScheme) and params.slots == 93
        client = scheme_from_public(params, scheme.public_bytes())
        xs = [np.where(np.arange(params.slots) % 2 == i % 2, params.clip, -params.clip) for i in range(64)]
        expected = sum(self._quantised(x, params) for x in xs).astype(np.float64) * params.step
        # Execute
        uploads = [client.serialize(client.encrypt(x)) for x in xs]
        total = client.sum(client.deserialize(u, expected_length=params.slots) for u in uploads)
        # Assert
        assert np.array_equal(scheme.decrypt(total), expected)
        assert len(uploads[0]) / params.slots <= 8.0
        with pytest.raises(CiphertextError):
            client.add(total, client.encrypt(xs[0]))


class TestPlain(HESchemeContract):
    @classmethod
    def make_params(cls) -> AnyParams:
        return PlainParams()

    @classmethod
    def foreign_params(cls) -> AnyParams:
        return PaillierParams()

    def test_non_finite_values_on_the_wire_are_refused(self, scheme: HEScheme[Any]) -> None:
        body = np.array([1.0, np.nan], dtype="<f8").tobytes()
        forged = envelope.encode(
            kind=scheme.kind, fingerprint=scheme.fingerprint, length=2, count=1, chunks=[body]
        )
        with pytest.raises(CiphertextError, match="not finite"):
            scheme.deserialize(forged)

    def test_sum_is_exact_for_representable_values(self, scheme: HEScheme[Any]) -> None:
        xs = [np.array([0.5, -1.25, 3.0]), np.array([0.25, 1.25, -1.0])]
        total: EncryptedVector[Any] = scheme.sum(scheme.encrypt(x) for x in xs)
        assert np.array_equal(scheme.decrypt(total), np.array([0.75, 0.0, 2.0]))
