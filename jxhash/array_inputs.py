"""Checks on arrays a caller hands to the library: one place for every entry that takes items.

`Encoder.encode`, `experiments/index.py build` and `search` take (N, D) features or (N, H, W, 3)
pixels from the caller. Without a check, an object array, a ragged list, a width the model was
not trained on or a NaN reach numpy or JAX and come back as a TypeError, a broadcasting error
or, worst, as codes computed from NaN (sign(NaN) is a valid-looking code). `feature_rows`
turns each of these into one `UserError` naming the argument:

  - array-like: a list that numpy cannot make rectangular (ragged rows) is refused, not turned
    into an object array;
  - numeric: bool, int, unsigned or float dtypes only (no objects, strings, complex numbers);
  - rank and trailing shape: (N, *trailing), with `trailing` the shape the model was fitted on;
  - at least one row;
  - finite: no NaN or inf anywhere, checked in row blocks so the check itself allocates little.

Lazy row sources (`jxhash.data.core.RowSource`, e.g. a pixel stack on disk) are checked by
shape and dtype here; their rows are checked block by block as they are read
(`check_finite_rows`), since reading them all first would defeat streaming.
"""

from __future__ import annotations

import numpy as np

from jxhash.errors import UserError

_NUMERIC_KINDS = "biuf"
_BLOCK_ROWS = 1 << 14  # rows per finiteness check: bounds the temporary boolean mask


def feature_rows(x, what: str, *, trailing: tuple | None = None, lazy_ok: bool = True):
  """`x` as an (N, *trailing) numeric array with N >= 1 and finite values.

  Args:
    x: an array, a nested list, a JAX array, or (with `lazy_ok`) a lazy row source.
    what: the argument as the message should name it, e.g. "x (text inputs)".
    trailing: the shape of one row the caller expects (e.g. (1386,) or (224, 224, 3)); None
      accepts any rank >= 2 (one row per item).
    lazy_ok: accept a row source unread (its rows then go through `check_finite_rows`).

  Returns:
    the numpy array (or the row source itself).

  Raises:
    UserError naming `what`: not array-like, ragged, non-numeric, wrong rank or shape, empty,
    or NaN / inf values (with the first offending row and column).
  """
  from jxhash.data.core import is_row_source

  if x is None or isinstance(x, (str, bytes, dict)):
    raise UserError(f"{what} must be an array of shape (N, ...), got {type(x).__name__}")
  if lazy_ok and is_row_source(x):
    _check_shape(tuple(x.shape), np.dtype(x.dtype), what, trailing)
    return x
  try:
    array = np.asarray(x)
  except (ValueError, TypeError):
    # numpy >= 1.24 refuses ragged nested lists ("inhomogeneous shape") instead of objects
    raise UserError(f"{what} is not a rectangular array of numbers (rows of unequal length?)") from None
  _check_shape(array.shape, array.dtype, what, trailing)
  check_finite_rows(array, what)
  return array


def _check_shape(shape: tuple, dtype: np.dtype, what: str, trailing: tuple | None) -> None:
  if dtype.kind not in _NUMERIC_KINDS:
    raise UserError(f"{what} holds {dtype} values; expected numbers (bool, int or float)")
  if trailing is not None:
    expected = (None, *trailing)
    if len(shape) != len(expected) or tuple(shape[1:]) != tuple(trailing):
      want = "(N, " + ", ".join(str(t) for t in trailing) + ")"
      raise UserError(f"{what} has shape {tuple(shape)}; expected {want}")
  elif len(shape) < 2:
    raise UserError(f"{what} has shape {tuple(shape)}; expected (N, ...) with one row per item")
  if shape[0] == 0:
    raise UserError(f"{what} has no rows (shape {tuple(shape)}); give at least one item")


def check_finite_rows(array: np.ndarray, what: str, *, first_row: int = 0) -> np.ndarray:
  """`array` if every value is finite; else a UserError naming `what` and the first bad row
  (counted from `first_row`, for blocks of a larger input) and column."""
  if array.dtype.kind != "f":
    return array
  for start in range(0, array.shape[0], _BLOCK_ROWS):
    block = array[start:start + _BLOCK_ROWS]
    bad = ~np.isfinite(block)
    if bad.any():
      position = np.argwhere(bad)[0]
      row = first_row + start + int(position[0])
      col = ", ".join(str(int(i)) for i in position[1:])
      count = int(bad.sum())
      raise UserError(f"{what} has NaN or inf values ({count} in rows {first_row + start}.."
                      f"{first_row + start + block.shape[0] - 1}; first at row {row}, column {col}); "
                      "codes of non-finite inputs mean nothing")
  return array
