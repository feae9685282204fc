"""jxhash.codes: the one bit order, checked by hand and against FAISS's packing rule."""

import jax.numpy as jnp
import numpy as np
import pytest

from jxhash import codes, losses
from jxhash.metrics import ranking


def test_bit_order_by_hand():
  # code[0] and code[63] set -> word 0 = 1 | 1 << 63; code[64] set -> word 1 = 1.
  x = -np.ones((1, 65), np.int8)
  x[0, [0, 63, 64]] = 1
  np.testing.assert_array_equal(codes.pack(x), [[1 | (1 << 63), 1]])
  # Bytes: byte b holds bits 8b..8b+7 least significant first (FAISS's fvec2bitvec rule).
  y = -np.ones((1, 16), np.int8)
  y[0, [1, 8, 15]] = 1
  np.testing.assert_array_equal(codes.to_bytes(codes.pack(y), 16), [[0b10, 0b10000001]])


@pytest.mark.parametrize("bits", [1, 7, 8, 63, 64, 65, 130])
def test_round_trips(bits):
  rng = np.random.default_rng(bits)
  x = (rng.integers(0, 2, size=(37, bits)) * 2 - 1).astype(np.int8)
  words = codes.pack(x)
  assert words.dtype == np.uint64 and words.shape == (37, codes.num_words(bits))
  if bits % 64:  # pad bits are 0
    assert not (words[:, -1] >> np.uint64(bits % 64)).any()
  np.testing.assert_array_equal(codes.unpack(words, bits), x)
  as_bytes = codes.to_bytes(words, bits)
  np.testing.assert_array_equal(as_bytes, np.packbits(x > 0, axis=1, bitorder="little"))
  np.testing.assert_array_equal(codes.from_bytes(as_bytes, bits), words)


def test_from_bytes_clears_pad_bits():
  np.testing.assert_array_equal(codes.from_bytes(np.array([[0xFF]], np.uint8), 5), [[0b11111]])


def test_popcounts_on_packed_words_are_hamming_distances():
  rng = np.random.default_rng(0)
  a = (rng.integers(0, 2, size=(5, 100)) * 2 - 1).astype(np.int8)
  b = (rng.integers(0, 2, size=(9, 100)) * 2 - 1).astype(np.int8)
  dist = ranking.pair_popcount(codes.pack(a), codes.pack(b), np.bitwise_xor, 100)
  np.testing.assert_array_equal(dist, (100 - a.astype(int) @ b.T.astype(int)) // 2)


def test_binarize_is_shared_with_losses():
  assert losses.binarize is codes.binarize
  np.testing.assert_array_equal(codes.binarize(jnp.array([-0.5, 0.0, 2.0])), [-1.0, 1.0, 1.0])
