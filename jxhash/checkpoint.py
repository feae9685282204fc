"""Orbax checkpoints of whole training runs, and `restore(path)` to encode new data.

A run directory (default `checkpoints/<method>/<dataset>/<bits>bits/`) holds

    latest/<epoch>/   the RunState after the last checkpointed epoch (resume from here)
    best/<epoch>/     the RunState with the best validation mAP
    run.json          what the run is: method, config, input sizes, seeds, dataset, split

and each checkpoint holds three items: `state` (the whole RunState pytree: parameters,
optimiser states, buffers, RNG keys, epoch counter), `inputs` (the input normalisation
statistics) and `meta` (run.json's content plus trainer bookkeeping). Orbax writes each
checkpoint to a temporary directory and renames it when complete, so a crash during a save
leaves the previous checkpoint intact.

Synopsis:

    from jxhash import checkpoint
    enc = checkpoint.restore("checkpoints/dcmh/wikipedia/32bits")
    codes = enc.encode("image", features)        # (N, 32) int8 in {-1, +1}
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jxhash import __version__, fileio
from jxhash.errors import CheckpointError
from jxhash.evaluation import encode as encode_codes
from jxhash.fileio import to_json
from jxhash.identity import describe_diff, identity_diff, run_identity
from jxhash.inputs import normalize
from jxhash.methods import get_method
from jxhash.runstate import abstract_state, seed_slice
from jxhash.spec import Dims


def run_metadata(spec, config, data, options) -> dict:
  """The JSON description of a run (its identity, `jxhash.identity`), saved with every checkpoint."""
  return {**run_identity(spec, config, data, options), "jxhash_version": __version__}


def default_run_dir(root, method: str, dataset: str, bits: int) -> pathlib.Path:
  return pathlib.Path(root) / method / dataset / f"{bits}bits"


class CheckpointStore:
  """latest/ and best/ checkpoints of one run (see the module docstring)."""

  def __init__(self, directory, meta: dict):
    self.directory = pathlib.Path(directory)
    self.meta = meta
    self.directory.mkdir(parents=True, exist_ok=True)
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
    self._managers = {name: ocp.CheckpointManager(self.directory / name, options=options)
                      for name in ("latest", "best")}
    fileio.atomic_write_json(self.directory / "run.json", to_json(meta), what="run metadata", sort_keys=True)

  @classmethod
  def open(cls, directory, meta: dict, *, resume: bool = False, overwrite: bool = False) -> "CheckpointStore":
    """A store for a run, refusing to mix it with another run's checkpoints.

    If `directory` already holds a run: with the same identity (IDENTITY_KEYS), `resume`
    keeps its checkpoints and anything else starts the run over; with another identity the
    call fails unless `overwrite` (which deletes the old checkpoints).
    """
    directory = pathlib.Path(directory)
    previous = directory / "run.json"
    if previous.exists():
      try:
        saved = json.loads(previous.read_text())
      except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{previous} is unreadable ({e}); remove it or pass --overwrite") from e
      same = not identity_diff(saved, meta)
      if not same and not overwrite:
        _check_identity(saved, meta, directory)
      if not (same and resume):
        for name in ("latest", "best"):
          shutil.rmtree(directory / name, ignore_errors=True)
    return cls(directory, meta)

  def has_latest(self) -> bool:
    return self._managers["latest"].latest_step() is not None

  def save_latest(self, state, stats: dict, epoch: int, extra: dict | None = None) -> None:
    self._save("latest", state, stats, epoch, extra or {})

  def save_best(self, state, stats: dict, epoch: int) -> None:
    self._save("best", state, stats, epoch, {})

  def restore_latest(self, template) -> tuple[Any, dict]:
    """The latest RunState (shaped like `template`) and the trainer's bookkeeping."""
    return self._restore("latest", template)

  def restore_best(self, template):
    return self._restore("best", template)[0]

  def wait(self) -> None:
    for m in self._managers.values():
      m.wait_until_finished()

  def _save(self, name, state, stats, epoch, extra):
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              inputs=ocp.args.StandardSave(stats),
                              meta=ocp.args.JsonSave(to_json({**self.meta, "trainer": extra})))
    self._managers[name].save(epoch, args=args, force=True)

  def _restore(self, name, template):
    manager = self._managers[name]
    step = manager.latest_step()
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory / name}")
    saved = _read_meta(manager, step, self.directory / name)
    _check_identity(saved, self.meta, self.directory / name)
    state = _restore_item(manager, step, template, self.directory / name)
    return state, saved.get("trainer", {})


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

  def encode(self, modality: str, x, *, chunk: int | None = None) -> np.ndarray:
    """Codes of raw (un-normalised) inputs.

    Args:
      modality: "image" or "text".
      x: (N, D) image features, (N, H, W, 3) uint8 pixels or (N, T) text features, as the
        dataset loader returns them (an array or a lazy row source, read chunk by chunk).
      chunk: rows per encoder call (default: 4096, 256 for pixels).

    Returns:
      (N, bits) int8 codes in {-1, +1}.
    """
    if modality not in ("image", "text"):
      raise CheckpointError(f"modality must be 'image' or 'text', got {modality!r}")
    return encode_codes(get_method(self.method), self.model, modality, x, chunk=chunk,
                        transform=functools.partial(normalize, self.stats, modality))


def restore(path, *, seed: int = 0, which: str = "best") -> Encoder:
  """Restore a checkpoint for encoding, without any training objects.

  Args:
    path: a run directory (holding latest/ and best/), or one of those subdirectories.
    seed: which seed of a multi-seed run (index 0 .. num_seeds-1).
    which: "best" (falls back to latest when there is no best) or "latest", for run dirs.

  Raises:
    CheckpointError: nothing restorable at `path`, a corrupt checkpoint, or a bad seed.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise CheckpointError(f"checkpoint path {path} does not exist")
  if (path / "latest").is_dir() or (path / "best").is_dir():
    candidates = [path / which, path / "latest"] if which == "best" else [path / which]
    path = next((p for p in candidates if p.is_dir() and _latest_step(p) is not None), candidates[-1])
  manager = _reader(path)
  step = manager.latest_step()
  if step is None:
    raise CheckpointError(f"no checkpoint found in {path}")
  meta = _read_meta(manager, step, path)
  try:
    spec = get_method(meta["method"])
    config = _config_from_json(spec.Config, meta["config"])
    template = abstract_state(spec, config, Dims.from_json(meta["dims"]), meta["num_train"], meta["num_seeds"])
  except (KeyError, TypeError) as e:
    raise CheckpointError(f"checkpoint {path}/{step} has unusable metadata ({e})") from e
  if not 0 <= seed < meta["num_seeds"]:
    raise CheckpointError(f"seed {seed} out of range: the checkpoint holds {meta['num_seeds']} seed(s)")
  state = _restore_item(manager, step, template, path)
  stats = _restore_stats(manager, step, path, meta)
  return Encoder(method=spec.name, config=config, meta=meta, model=seed_slice(state.model, seed),
                 stats=stats, epoch=int(state.epoch))


# --------------------------------------------------------------------------- helpers


def _reader(path) -> ocp.CheckpointManager:
  # read_only=True would log three warnings per open; create=False is enough not to write
  return ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(create=False))


def _latest_step(path):
  try:
    return _reader(path).latest_step()
  except Exception:  # noqa: BLE001 - an unreadable directory is simply not a candidate
    return None


def _read_meta(manager, step, path) -> dict:
  try:
    out = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"])
  except Exception as e:  # noqa: BLE001 - orbax raises many types for a damaged file
    raise CheckpointError(f"checkpoint {path}/{step} is unreadable or corrupt: metadata: {_short(e)}") from e


def _restore_item(manager, step, template, path):
  device = jax.devices()[0]
  sharding = jax.sharding.SingleDeviceSharding(device)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), template)
  try:
    out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"checkpoint {path}/{step} is unreadable or corrupt: state: {_short(e)}") from e
  return out["state"]


def _restore_stats(manager, step, path, meta):
  dims = meta["dims"]
  widths = {"image": tuple(dims["image_shape"]), "text": (dims["text_dim"],)}
  abstract = {m: {k: jax.ShapeDtypeStruct(widths[m], np.float32) for k in ("mean", "scale")} for m in widths}
  try:
    out = manager.restore(step, args=ocp.args.Composite(inputs=ocp.args.StandardRestore(abstract)))
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"checkpoint {path}/{step} is unreadable or corrupt: inputs: {_short(e)}") from e
  return jax.tree.map(np.asarray, out["inputs"])


def _check_identity(saved: dict, current: dict, path) -> None:
  diff = identity_diff(saved, current)
  if diff:
    raise CheckpointError(f"checkpoint {path} belongs to a different run ({describe_diff(diff)}; checkpoint vs "
                          "this run); use another --checkpoint-dir, or --overwrite to replace it")


def _config_from_json(cls, values: dict):
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = set(values) - set(fields)
  if unknown:
    raise TypeError(f"unknown config fields {sorted(unknown)} for {cls.__name__}")
  return cls(**{k: _tuples(v) for k, v in values.items()})


def _tuples(x):
  """JSON lists back to the tuples frozen configs use, recursively."""
  return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def _short(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:200] if text else ''}"
