"""±1 hash codes: binarization, and the one bit packing that every part of jxhash uses.

"Codes" in jxhash always means ±1 values (N, K); real-valued network outputs are "outputs".

Bit order (the only one in jxhash): a K-bit code is stored as W = ceil(K / 64) uint64 words, and
bit j of word w (the value 1 << j) is set where code[64 w + j] > 0; pad bits past K are 0. Seen
as bytes with the words written little-endian, byte b holds code[8 b .. 8 b + 7], least
significant bit first. That is `np.packbits(..., bitorder="little")` and also the layout of
FAISS's binary codes (faiss/utils/hamming.cpp, `fvec2bitvec`: element i sets bit 1 << (i % 8) of
byte i // 8), so for K a multiple of 8 the first K / 8 bytes of each row *are* FAISS's code.

XOR and AND popcounts do not depend on the bit order as long as both operands are packed the
same way, which is why the Hamming ranking (`jxhash.metrics.ranking`) and the index could pack in
different orders before; they now share `pack`, so packed codes can move between them (and to
FAISS) without conversion.

Synopsis:

    from jxhash import codes
    b = codes.binarize(h)            # real (..., K) -> ±1, sign(0) = +1
    w = codes.pack(b)                # (N, K) -> (N, ceil(K / 64)) uint64
    codes.unpack(w, K)               # back to (N, K) int8 ±1
    codes.to_bytes(w, K)             # (N, ceil(K / 8)) uint8, FAISS's code layout
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_ROWS_PER_STEP = 1 << 16  # rows packed at a time: bounds the boolean temporary


def binarize(outputs: jax.Array) -> jax.Array:
  """sign() mapping 0 to +1, so every code is strictly in {-1, +1}.

  Args:
    outputs: (..., K) real-valued outputs.

  Returns:
    same shape, dtype of `outputs`, values in {-1, +1}.
  """
  return jnp.where(outputs >= 0, 1, -1).astype(outputs.dtype)


def num_words(bits: int) -> int:
  """ceil(bits / 64): uint64 words per packed code."""
  return -(-int(bits) // 64)


def pack(x, *, rows_per_step: int = _ROWS_PER_STEP) -> np.ndarray:
  """(M, B) array -> (M, ceil(B / 64)) uint64 words holding the bits x > 0, in the order above.

  Works for ±1 codes and 0/1 label vectors alike (anything > 0 is a set bit). Padding bits are
  0 on both sides of a comparison, so they add nothing to XOR or AND popcounts. Rows go in steps
  so the boolean temporary stays small for large M.
  """
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"pack takes an (M, B) array, got shape {x.shape}")
  words = num_words(x.shape[1])
  out = np.zeros((x.shape[0], 8 * words), np.uint8)
  for start in range(0, x.shape[0], rows_per_step):
    part = np.packbits(x[start:start + rows_per_step] > 0, axis=1, bitorder="little")
    out[start:start + part.shape[0], :part.shape[1]] = part
  return _bytes_to_words(out)


def unpack(words: np.ndarray, bits: int) -> np.ndarray:
  """(M, W) uint64 words -> (M, bits) int8 codes in {-1, +1} (the inverse of `pack` on ±1 codes)."""
  as_bytes = np.ascontiguousarray(words, dtype=np.uint64).astype("<u8", copy=False).view(np.uint8)
  unpacked = np.unpackbits(as_bytes.reshape(words.shape[0], -1), axis=1, count=bits, bitorder="little")
  return unpacked.astype(np.int8) * 2 - 1


def to_bytes(words: np.ndarray, bits: int) -> np.ndarray:
  """(M, W) uint64 words -> (M, ceil(bits / 8)) uint8: byte b holds bits 8b..8b+7, LSB first."""
  as_bytes = np.ascontiguousarray(words, dtype=np.uint64).astype("<u8", copy=False).view(np.uint8)
  return np.ascontiguousarray(as_bytes.reshape(words.shape[0], -1)[:, :-(-bits // 8)])


def from_bytes(data: np.ndarray, bits: int) -> np.ndarray:
  """(M, ceil(bits / 8)) uint8 in the byte layout above -> (M, ceil(bits / 64)) uint64 words.

  Bits past `bits` in the last byte are cleared, so the pad-bits-are-0 invariant holds whatever
  the input.
  """
  data = np.asarray(data, np.uint8)
  nbytes = -(-bits // 8)
  if data.ndim != 2 or data.shape[1] != nbytes:
    raise ValueError(f"from_bytes takes (M, {nbytes}) uint8 for {bits} bits, got {data.shape}")
  out = np.zeros((data.shape[0], 8 * num_words(bits)), np.uint8)
  out[:, :nbytes] = data
  if bits % 8:
    out[:, nbytes - 1] &= np.uint8((1 << (bits % 8)) - 1)
  return _bytes_to_words(out)


def _bytes_to_words(data: np.ndarray) -> np.ndarray:
  # Little-endian words whatever the machine, so that files and FAISS bytes read back the same.
  return data.view("<u8").astype(np.uint64, copy=False)
