"""Restore a checkpoint to encode new data, without any training objects.

    from jxhash import inference            # also jxhash.checkpoint.restore
    enc = inference.restore("checkpoints/dcmh-wikipedia-32bits-seed0-3f9a1c2e")
    codes = enc.encode("image", features)   # (N, 32) int8 in {-1, +1}

`restore` reads a run folder written by `jxhash.runs.store` (its format version, checksums and
identity checks are that module's) and rebuilds the method's model from the registry. This is the
inference path: it imports no trainer (`jxhash.training.trainer`) and writes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jxhash import fileio
from jxhash.array_inputs import check_finite_rows, feature_rows
from jxhash.errors import CheckpointError, UserError
from jxhash.methods import get_method
from jxhash.runs.store import (KINDS, check_digest, check_format, check_run_json, latest_step, read_meta, reader,
                               restore_item, restore_stats)
from jxhash.spec import Dims
from jxhash.training.evaluation import encode as encode_codes
from jxhash.training.inputs import normalize, tokens
from jxhash.training.runstate import abstract_state, seed_slice


@dataclasses.dataclass
class Encoder:
  """A restored model that turns raw features into ±1 codes.

  Attributes:
    method: registry name.
    config: the method's config.
    meta: the run's run.json content.
    model: one seed's method state (the method's pytree).
    stats: input normalisation statistics.
    epoch: epochs the checkpoint had trained.
  """

  method: str
  config: Any
  meta: dict
  model: Any
  stats: dict
  epoch: int

  @property
  def bits(self) -> int:
    return self.config.bits

  def input_shape(self, modality: str) -> tuple:
    """The shape of one input row the model was fitted on: (D,), (T,) or (H, W, 3) for pixels."""
    if not isinstance(modality, str) or modality not in ("image", "text"):
      raise CheckpointError(f"modality must be 'image' or 'text', got {modality!r}")
    return tuple(int(s) for s in self.stats[modality]["mean"].shape)

  def encode(self, modality: str, x, *, chunk: int | None = None) -> np.ndarray:
    """Codes of raw (un-normalised) inputs.

    Args:
      modality: "image" or "text".
      x: (N, D) image features, (N, H, W, 3) uint8 pixels or (N, T) text features, as the
        dataset loader returns them (an array or a lazy row source, read chunk by chunk).
      chunk: rows per encoder call (default: 4096, 256 for pixels).

    Returns:
      (N, bits) int8 codes in {-1, +1}.

    Raises:
      UserError naming `x` (`jxhash.array_inputs.feature_rows`): not a rectangular numeric
      array, no rows, rows of another shape than the model was fitted on, NaN or inf values.
    """
    trailing = self.input_shape(modality)
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1):
      raise UserError(f"chunk must be a positive int or None, got {chunk!r}")
    what = f"x ({modality} inputs)"
    x = feature_rows(x, what, trailing=trailing)
    # an array was checked whole; a lazy row source is checked block by block as it is read
    lazy = not isinstance(x, np.ndarray)
    offset = 0

    def transform(part):
      nonlocal offset
      if lazy:
        check_finite_rows(part, what, first_row=offset)
        offset += part.shape[0]
      return normalize(self.stats, modality, part, tokens=tokens(Dims.from_json(self.meta["dims"]), modality))

    return encode_codes(get_method(self.method), self.model, modality, x, chunk=chunk, transform=transform)


def restore(path, *, seed: int = 0, which: str = "best") -> Encoder:
  """Restore a checkpoint for encoding, without any training objects.

  Args:
    path: a run directory (holding latest/ and best/), or one of those subdirectories; relative,
      `~` and symlinked paths are fine.
    seed: which seed of a multi-seed run (index 0 .. num_seeds-1).
    which: "best" (falls back to latest when there is no best) or "latest", for run dirs.

  Raises:
    CheckpointError: nothing restorable at `path`, a damaged checkpoint (its checksum does not
      match), a layout of another jxhash version, a run.json that contradicts the checkpoint,
      or a bad seed.
  """
  if which not in KINDS:
    raise CheckpointError(f"which must be 'best' or 'latest', got {which!r}")
  path = fileio.resolve(fileio.user_path(path, "checkpoint path"))
  if not path.exists():
    raise CheckpointError(f"checkpoint path {path} does not exist")
  if not path.is_dir():
    raise CheckpointError(f"checkpoint path {path} is a file; give the run directory")
  run_dir = path
  if (path / "latest").is_dir() or (path / "best").is_dir():
    candidates = [path / which, path / "latest"] if which == "best" else [path / which]
    path = next((p for p in candidates if p.is_dir() and latest_step(p) is not None), candidates[-1])
  else:
    run_dir = path.parent
  manager = reader(path)
  step = manager.latest_step()
  if step is None:
    raise CheckpointError(f"no checkpoint found in {path}")
  meta = read_meta(manager, step, path)
  check_format(meta, path, step)
  check_run_json(run_dir / "run.json", meta, path, step)
  try:
    spec = get_method(meta["method"])
    config = _config_from_json(spec.Config, meta["config"])
    template = abstract_state(spec, config, Dims.from_json(meta["dims"]), meta["num_train"], meta["num_seeds"])
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"checkpoint {path}/{step} has unusable metadata ({e})") from e
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < meta["num_seeds"]:
    raise CheckpointError(f"seed {seed!r} out of range: the checkpoint holds {meta['num_seeds']} seed(s), "
                          f"0..{meta['num_seeds'] - 1}")
  state = restore_item(manager, step, template, path)
  check_digest(meta, "state", state, path, step)
  stats = restore_stats(manager, step, path, meta)
  check_digest(meta, "inputs", stats, path, step)
  return Encoder(method=spec.name, config=config, meta=meta, model=seed_slice(state.model, int(seed)),
                 stats=stats, epoch=int(state.epoch))


def _config_from_json(cls, values: dict):
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = set(values) - set(fields)
  if unknown:
    raise TypeError(f"unknown config fields {sorted(unknown)} for {cls.__name__}")
  return cls(**{k: _tuples(v) for k, v in values.items()})


def _tuples(x):
  """JSON lists back to the tuples frozen configs use, recursively."""
  return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


