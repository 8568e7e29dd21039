"""Fixed-point slot packing for packed Paillier (BatchCrypt: Zhang et al., USENIX ATC 2020, section 4).

A value `x` in `[-clip, clip]` is quantised to `q = round(x / step)` with `step = clip / offset` and
`offset = 2^(quant_bits - 1) - 1`, so `|q| <= offset`, then shifted to `u = q + offset` in `[0, 2 offset]`.
`slots` such values of `slot_bits = quant_bits + headroom_bits` bits each are laid side by side in one
integer, slot 0 in the lowest bits. Adding Paillier ciphertexts adds those integers, hence every slot:
a sum of `count <= max_clients` encryptions holds `sum(q) + count * offset <= count * 2 offset`
`< 2^slot_bits` per slot, and never carries into its neighbour.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from protocol.crypto.errors import PackingError
from protocol.crypto.params import PaillierParams

UIntArray = npt.NDArray[np.uint64]
IntArray = npt.NDArray[np.int64]
_BLOCK_CHUNKS = 2048  # chunks per numpy pass: bounds the bit arrays at ~30 MB at the defaults


def offset(params: PaillierParams) -> int:
    return (1 << (params.quant_bits - 1)) - 1


def quantise(x: npt.NDArray[np.float64], params: PaillierParams) -> IntArray:
    """Nearest fixed-point integers; `x` must already lie in `[-clip, clip]`."""
    limit = offset(params)
    # The clip keeps |q| <= offset even where x / step rounds a hair above clip / step.
    return np.clip(np.rint(x / params.step), -limit, limit).astype(np.int64)


def dequantise(sums: IntArray, params: PaillierParams) -> npt.NDArray[np.float64]:
    return sums.astype(np.float64) * params.step


def packed_bytes(params: PaillierParams) -> int:
    return (params.slots * params.slot_bits + 7) // 8


def pack(q: IntArray, params: PaillierParams) -> list[int]:
    """One integer per chunk of `params.slots` quantised values; the last chunk is padded with zeros."""
    return pack_slots((q + offset(params)).astype(np.uint64), params)


def pack_slots(values: UIntArray, params: PaillierParams) -> list[int]:
    """Non-negative slot values (each below `2^slot_bits`) laid side by side, `params.slots` per integer.

    Built in 64-bit little-endian words: slot `i` of every chunk starts at the same bit `i * slot_bits` of
    its chunk, so one numpy pass per slot position ORs it into its word (and the next, where it straddles
    one) for all chunks at once; each chunk's words then become one integer."""
    slots, bits = params.slots, params.slot_bits
    n_chunks = -(-values.size // slots)
    words_per_chunk = -(-slots * bits // 64)
    grid = np.zeros((n_chunks, slots), dtype=np.uint64)
    grid.reshape(-1)[: values.size] = values
    words = np.zeros((n_chunks, words_per_chunk), dtype="<u8")
    for slot in range(slots):
        word, shift = divmod(slot * bits, 64)
        column = grid[:, slot]
        words[:, word] |= column << np.uint64(shift)
        if shift + bits > 64:  # straddles into the next word (slot_bits <= 64: never two words on)
            words[:, word + 1] |= column >> np.uint64(64 - shift)
    raw = memoryview(words.tobytes())
    size = words_per_chunk * 8
    return [int.from_bytes(raw[i : i + size], "little") for i in range(0, len(raw), size)]


def unpack_slots(packed: list[int], length: int, params: PaillierParams) -> UIntArray:
    """The first `length` slot values of decrypted packed integers. Raises `PackingError` if a bit above
    the last slot, or a padding slot, is set: the ciphertext was not packed by fedlora."""
    slots, bits = params.slots, params.slot_bits
    used_bits = slots * bits
    width = packed_bytes(params)
    shifts = np.arange(bits, dtype=np.uint64)
    out = np.empty(len(packed) * slots, dtype=np.uint64)
    for start in range(0, len(packed), _BLOCK_CHUNKS):
        block = packed[start : start + _BLOCK_CHUNKS]
        for index, value in enumerate(block, start):
            if value >> used_bits:
                raise PackingError(f"decrypted chunk {index} has bits set above its {slots} slots")
        raw = np.frombuffer(b"".join(v.to_bytes(width, "little") for v in block), dtype=np.uint8)
        bit_rows = np.unpackbits(raw.reshape(len(block), width), axis=1, bitorder="little")[:, :used_bits]
        values = (bit_rows.reshape(len(block), slots, bits).astype(np.uint64) << shifts).sum(axis=2)
        out[start * slots : (start + len(block)) * slots] = values.reshape(-1)
    if np.any(out[length:]):
        raise PackingError("decrypted padding slots are not zero: the ciphertext was not packed by fedlora")
    return out[:length]


def unpack(packed: list[int], length: int, *, count: int, params: PaillierParams) -> IntArray:
    """Per-value sums `sum(q)` of a decrypted sum of `count` encryptions.

    Raises `PackingError` if a slot exceeds what `count` encryptions can produce or a padding slot or bit
    is set: the ciphertext was not a sum of `count` honest encryptions under these parameters.
    """
    return shifted_sums(unpack_slots(packed, length, params), count=count, params=params)


def residues(q: IntArray, params: PaillierParams) -> UIntArray:
    """Quantised values as ring residues `q + offset` in `[0, 2 offset]`, ready for masks (masking only)."""
    return (q + offset(params)).astype(np.uint64)


def ring_reduce(values: UIntArray, params: PaillierParams) -> UIntArray:
    """Slot values reduced into the ring `Z_(2^ring_bits)`."""
    return values & np.uint64((1 << params.ring_bits) - 1)


def shifted_sums(values: UIntArray, *, count: int, params: PaillierParams) -> IntArray:
    """`sum(q)` from per-value sums of `count` residues `q + offset`, after checking that each lies where
    `count` honest values can reach: `[0, count * 2 offset]`. A masked sum whose masks did not cancel, or a
    sum with more summands than it claims, lands above that (for masked sums, in at least half the ring).
    """
    ceiling = count * 2 * offset(params)
    over = np.flatnonzero(values > ceiling)
    if over.size:
        index = int(over[0])
        raise PackingError(
            f"decrypted value {index} is {int(values[index])}, above {ceiling}, the most {count} encryptions "
            f"can sum to ({over.size} of {values.size} values are): the sum has more summands than it claims, "
            "overflowed, or holds masks that did not cancel"
        )
    return values.astype(np.int64) - count * offset(params)
