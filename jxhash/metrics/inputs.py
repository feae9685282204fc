"""Checks of the arrays given to `jxhash.metrics`: one `UserError` naming the argument and the problem."""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jxhash.errors import UserError


def size(x, axis):
  shape = np.shape(x)
  return shape[axis] if len(shape) > axis else 0


def as_array(x, name):
  try:
    return np.asarray(x)
  except Exception as e:  # noqa: BLE001 - anything that cannot become an array is a user error
    raise UserError(f"{name} must be an array, got {type(x).__name__}: {e}") from None


def invalid_values(arr, allowed, rows_per_step=1 << 16):
  """Up to 5 distinct values of `arr` outside `allowed` (two values); checked in row steps so
  the boolean temporaries stay small for million-row inputs."""
  low, high = allowed
  for start in range(0, arr.shape[0], rows_per_step):
    part = arr[start:start + rows_per_step]
    ok = (part == low) | (part == high)
    if not ok.all():
      return np.unique(part[~ok])[:5].tolist()
  return []


@functools.partial(jax.jit, static_argnames=("low", "high"))
def _all_in(x, low, high):
  return jnp.all((x == low) | (x == high))


def on_device(x, allowed, kinds):
  """A device array checked where it is (shape, dtype, then one jitted all-values test, a
  scalar back to the host); None for anything else, which the host checks read instead."""
  if not isinstance(x, jax.Array):
    return None
  kind = "f" if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype.kind
  if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0 or kind not in kinds:
    return None  # the host checks word the error
  if not bool(jax.device_get(_all_in(x, *allowed))):  # explicit: allowed under a transfer guard
    return None  # the host checks find and name the bad values
  return x


def check_codes(codes, name, on_device_ok=False):
  if on_device_ok and on_device(codes, (-1, 1), "iuf") is not None:
    return codes
  arr = as_array(codes, name)
  if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
    raise UserError(f"{name} must be a non-empty 2-D array of ±1 codes (rows, bits), got shape {arr.shape}")
  if arr.dtype.kind not in "iuf":
    raise UserError(f"{name} must be numeric ±1 codes, got dtype {arr.dtype} (shape {arr.shape})")
  bad = invalid_values(arr, (-1, 1))
  if bad:
    raise UserError(f"{name} (shape {arr.shape}) must contain only -1 and +1, found {bad}; "
                    f"binarize with sign() and map 0 to +1 or -1 first")
  return arr


def check_labels(labels, name, on_device_ok=False):
  if on_device_ok and on_device(labels, (0, 1), "biuf") is not None:
    return labels
  arr = as_array(labels, name)
  if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
    raise UserError(f"{name} must be a non-empty 2-D multi-hot array (rows, classes), got shape {arr.shape}")
  if arr.dtype.kind not in "biuf":
    raise UserError(f"{name} must be numeric 0/1 labels, got dtype {arr.dtype} (shape {arr.shape})")
  bad = invalid_values(arr, (0, 1))
  if bad:
    raise UserError(f"{name} (shape {arr.shape}) must be multi-hot 0/1, found values {bad}")
  return arr


def check_same_width(a, b, name_a, name_b, what):
  if a.shape[1] != b.shape[1]:
    raise UserError(f"{name_a} has {a.shape[1]} {what} (shape {a.shape}) but {name_b} has "
                    f"{b.shape[1]} (shape {b.shape})")


def check_rows(codes, labels, codes_name, labels_name):
  if codes.shape[0] != labels.shape[0]:
    raise UserError(f"{labels_name} has {labels.shape[0]} rows (shape {labels.shape}) but "
                    f"{codes_name} has {codes.shape[0]} (shape {codes.shape})")


def check_cutoff(k, name):
  if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
    raise UserError(f"{name} must be a positive int, got {k!r}")
  return int(k)


def check_cutoffs(ks, name, allow_empty=False):
  if isinstance(ks, numbers.Integral) and not isinstance(ks, bool):
    ks = (ks,)
  if not isinstance(ks, (Sequence, np.ndarray)) or isinstance(ks, str):
    raise UserError(f"{name} must be a positive int or a sequence of them, got {ks!r}")
  ks = tuple(check_cutoff(k, name) for k in ks)
  if not ks and not allow_empty:
    raise UserError(f"{name} must not be empty")
  return ks
