"""The ids of a `HashIndex`: unique int64 values, by default the insertion positions 0..N-1."""

from __future__ import annotations

import numpy as np

from jxhash.errors import UserError


class IdSet:
  """Answers "is this id new?" for an append-only index, and validates batches of ids.

  While every id equals its position (the default, and FAISS's implicit ids), nothing is stored
  and a duplicate is just an id in [0, N); once other ids arrive, a sorted copy of all ids answers
  by binary search.
  """

  def __init__(self):
    self.are_positions = True
    self._sorted: np.ndarray | None = None

  def checked_new(self, ids, start: int, n: int) -> np.ndarray:
    """Validates the ids of n items appended after `start` existing ones (None: their positions),
    records them, and returns them as (n,) int64. Raises UserError, recording nothing."""
    if ids is None:
      new = np.arange(start, start + n, dtype=np.int64)
      if self.are_positions or n == 0:
        return new
      clash = self._present(new, start)
      if clash.any():
        raise UserError(f"default ids (insertion positions {start}..{start + n - 1}) collide with id "
                        f"{int(new[clash][0])} given earlier; pass ids explicitly")
      self._sorted = _merge_sorted(self._sorted, new)
      return new
    raw = np.asarray(ids)
    if raw.shape != (n,):
      raise UserError(f"ids must have shape ({n},) to match the codes, got {raw.shape}")
    if n and raw.dtype.kind not in "iu":
      raise UserError(f"ids must be integers, got dtype {raw.dtype}")
    if raw.dtype.kind == "u" and n and raw.max() > np.iinfo(np.int64).max:
      raise UserError(f"ids must fit in int64, got {int(raw.max())}")
    new = raw.astype(np.int64)
    sorted_new = np.sort(new)
    repeated = sorted_new[1:][sorted_new[1:] == sorted_new[:-1]]
    if repeated.size:
      raise UserError(f"duplicate id {int(repeated[0])} within the ids being added")
    clash = self._present(new, start)
    if clash.any():
      raise UserError(f"id {int(new[clash][0])} is already in the index; ids must be unique")
    if self.are_positions and np.array_equal(new, np.arange(start, start + n)):
      return new
    existing = np.arange(start, dtype=np.int64) if self.are_positions else self._sorted
    self.are_positions = False
    self._sorted = _merge_sorted(existing, sorted_new)
    return new

  def _present(self, new: np.ndarray, size: int) -> np.ndarray:
    """Boolean mask: which of `new` are ids already in the index (of `size` items)."""
    if self.are_positions:
      return (new >= 0) & (new < size)
    if self._sorted.size == 0:
      return np.zeros(new.shape, bool)
    where = np.minimum(np.searchsorted(self._sorted, new), self._sorted.size - 1)
    return self._sorted[where] == new


def _merge_sorted(a: np.ndarray, b_sorted: np.ndarray) -> np.ndarray:
  """Sorted union of two sorted int64 arrays (timsort merges the two runs in linear time)."""
  return np.sort(np.concatenate([a, b_sorted]), kind="stable")
