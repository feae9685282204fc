"""Orbax checkpoints of whole training runs: the store a run saves to and resumes from.

A run directory (by default `<workdir>/checkpoints/<run name>/`, the name from
`jxhash.runs.identity.run_name`) holds

    latest/<epoch>/   the RunState after the last checkpointed epoch (resume from here)
    best/<epoch>/     the RunState with the best validation mAP (the last two kept: see below)
    run.json          what the run is: its identity (`jxhash.runs.identity`) and the jxhash version
    .lock             held while a process trains here (`jxhash.runs.lock`)
    superseded/       a previous attempt's checkpoints, kept until this attempt completes

and each checkpoint holds three items: `state` (the whole RunState pytree: parameters,
optimiser states, buffers, RNG keys, epoch counter), `inputs` (the input normalisation
statistics) and `meta` (the run's identity, the trainer's record, and a checksum of `state`,
`inputs` and that record). Integrity:
- Orbax writes each checkpoint to a temporary directory and renames it when complete, and a
  Ctrl-C during a save is held back until the save ends, so an interruption leaves the previous
  checkpoint intact.
- The checksum is recomputed at every restore and resume: a damaged file is reported, never
  restored silently.
- In an epoch that improves on val, best/ is saved before latest/, so latest/ never names a
  best epoch that was not saved. A process killed between the two saves leaves a best/ step
  newer than latest/: resuming discards it (that epoch is trained again), and the best/ step
  that latest/ names is still there because best/ keeps its last two steps.
- Starting a run over moves the earlier attempt's checkpoints to `superseded/` and deletes them
  only when the new attempt completes; another run's checkpoints are never touched (unless
  `overwrite`), and a folder whose run cannot be established (no run.json) is refused.
- The identity saved in each checkpoint is compared with run.json and with the run asking to
  continue it. The run folder's own names are never followed through a symbolic link.

Multi-process runs (docs/multiprocess.md): every process opens the store and takes part in every
save and restore (orbax coordinates them; the run directory must be one shared path that every
process sees), but only process 0 takes the lock, checks and writes run.json, moves superseded
checkpoints and deletes them; the others wait for it at `open`.

The readers and checks at the bottom are shared with `jxhash.inference.restore`, which reads a
checkpoint to encode with it; this module imports no method and no trainer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import threading
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jxhash import __version__, distributed, fileio
from jxhash.errors import CheckpointError, UserError
from jxhash.fileio import to_json
from jxhash.runs.identity import describe_diff, identity_diff, run_identity
from jxhash.runs.lock import RunLock

logger = logging.getLogger(__name__)

# the layout of the saved pytrees; restore refuses other layouts with a message instead of
# failing inside orbax (format 1: jxhash 0.1, whose method states named their buffers `codes`)
CHECKPOINT_FORMAT = 2
KINDS = ("latest", "best")
# best/ keeps one step more than latest/ needs: the one the latest checkpoint names survives a
# kill between an epoch's best and latest saves (see the module docstring)
_KEEP = {"latest": 1, "best": 2}
_SUPERSEDED = "superseded"
_ECHO_GRACE_S = 0.5  # see CheckpointStore._save
_OPENED = "jxhash-checkpoint-store-opened"  # barrier: process 0 has prepared the run directory


def run_metadata(spec, config, data, options) -> dict:
  """The JSON description of a run (its identity, `jxhash.runs.identity`), saved with every checkpoint."""
  return metadata(run_identity(spec, config, data, options))


def metadata(identity: dict) -> dict:
  """`run_metadata` of a run whose identity is already computed."""
  return {**identity, "jxhash_version": __version__, "checkpoint_format": CHECKPOINT_FORMAT}


def tree_digest(tree) -> str:
  """A checksum (blake2b, hex) of every leaf's path, dtype, shape and bytes, in tree order."""
  h = hashlib.blake2b(digest_size=16)
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      leaf = leaf.addressable_data(0)  # replicated over processes: every process holds all of it
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def json_digest(obj) -> str:
  """A checksum (blake2b, hex) of `obj`'s canonical JSON (sorted keys)."""
  text = json.dumps(to_json(obj), sort_keys=True, separators=(",", ":"))
  return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class _HeldOutput:
  def __init__(self):
    self.keep = True

  def drop(self) -> None:
    self.keep = False


@contextlib.contextmanager
def _native_stderr_held():
  """Hold what is written to file descriptor 2 during the block, and write it out after it
  unless `drop()` was called. Orbax's native writer threads (tensorstore callbacks into a closed
  asyncio loop) print tracebacks there when a save fails, which no Python handler can catch; a
  failed save is reported in one line instead. Python's own `sys.stderr` is flushed first."""
  import sys
  import tempfile
  held = _HeldOutput()
  if jax.process_count() > 1:
    # a multi-process run's watchdog thread may report a dead peer and end the process during a
    # save: its one line must reach the terminal, so nothing is held there
    yield held
    return
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError):  # no usable descriptor 2 (an embedding host): hold nothing
    yield held
    return
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield held
    finally:
      with contextlib.suppress(Exception):
        sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      if held.keep:
        tmp.seek(0)
        data = tmp.read()
        if data:
          os.write(2, data)


@contextlib.contextmanager
def _interrupts_held():
  """Hold a Ctrl-C (SIGINT) back until the block ends, so a save is never cut in half."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  received = []
  previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  if received:
    raise KeyboardInterrupt


class CheckpointStore:
  """latest/ and best/ checkpoints of one run (see the module docstring).

  Open it with `CheckpointStore.open`; it holds the run directory's lock until `close()` (or
  until it is garbage collected, or the process ends).
  """

  def __init__(self, directory, meta: dict, *, lock: RunLock | None = None):
    self.directory = fileio.resolve(directory)
    self.meta = meta
    self.primary = jax.process_index() == 0  # the process that locks and writes run.json
    try:
      self.directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise UserError(f"cannot create checkpoint directory {self.directory}: {fileio.describe_os_error(e)}") from e
    self._lock = (lock or RunLock(self.directory)) if self.primary else None
    self._managers = {name: ocp.CheckpointManager(self.directory / name, options=ocp.CheckpointManagerOptions(
        max_to_keep=_KEEP[name], create=True, enable_async_checkpointing=False)) for name in KINDS}
    if self.primary:
      fileio.atomic_write_json(self.directory / "run.json", to_json(meta), what="run metadata", sort_keys=True)

  @classmethod
  def open(cls, directory, meta: dict, *, resume: bool = False, overwrite: bool = False) -> "CheckpointStore":
    """The store of a run, refusing to mix it with another run's checkpoints.

    If `directory` already holds a run: with the same identity, `resume` keeps its
    checkpoints, and anything else starts the run over (the earlier attempt's checkpoints are
    kept in superseded/ until this attempt completes); with another identity the call fails
    unless `overwrite`. The directory is locked first, so a second process is refused before
    anything changes. In a multi-process run process 0 does all of that; the others wait for it.
    """
    directory = fileio.resolve(directory)
    if jax.process_index() != 0:
      distributed.barrier(_OPENED)  # process 0 checked, locked and cleared the directory
      return cls(directory, meta)
    if directory.exists() and not directory.is_dir():
      raise UserError(f"checkpoint directory {directory} is a file")
    try:
      directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise UserError(f"cannot create checkpoint directory {directory}: {fileio.describe_os_error(e)}") from e
    _check_own_entries(directory)
    lock = RunLock(directory)
    try:
      previous = directory / "run.json"
      keep = False
      if previous.exists():
        saved = _read_run_json(previous, overwrite)
        if saved is not None and identity_diff(saved, meta) and not overwrite:
          _check_identity(saved, meta, directory)
        keep = saved is not None and not identity_diff(saved, meta) and resume
      elif any((directory / k).exists() for k in KINDS) and not overwrite:
        raise CheckpointError(f"{directory} holds checkpoints but no run.json, so the run they belong to cannot be "
                              "established; remove them, choose another --name, or pass --overwrite")
      if not keep:
        _supersede(directory)
      distributed.barrier(_OPENED)
      return cls(directory, meta, lock=lock)
    except BaseException:
      lock.release()
      raise

  def close(self) -> None:
    """Release the run directory's lock (the checkpoints stay)."""
    if self._lock is not None:
      self._lock.release()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def has_latest(self) -> bool:
    return self._managers["latest"].latest_step() is not None

  def latest_epoch(self) -> int | None:
    return self._managers["latest"].latest_step()

  def save_latest(self, state, stats: dict, epoch: int, extra: dict | None = None) -> None:
    self._save("latest", state, stats, epoch, extra or {})

  def save_best(self, state, stats: dict, epoch: int) -> None:
    self._save("best", state, stats, epoch, {})

  def restore_latest(self, template) -> tuple[Any, dict]:
    """The latest RunState (shaped like `template`) and the trainer's bookkeeping.

    Best checkpoints newer than it belong to an epoch that will be trained again (a process
    killed between that epoch's best and latest saves): they are discarded here, since saving
    that epoch again would otherwise collide with them."""
    state, extra = self._restore("latest", template)
    best = self._managers["best"]
    for step in best.all_steps():
      if step > int(state.epoch):
        logger.info("discarding best checkpoint %d: newer than the latest checkpoint (%d)", step, int(state.epoch))
        best.delete(step)
    return state, extra

  def restore_best(self, template, epoch: int):
    """The best RunState saved at `epoch` (the trainer's selected epoch)."""
    return self._restore("best", template, epoch)[0]

  def wait(self) -> None:
    for m in self._managers.values():
      m.wait_until_finished()

  def complete(self) -> None:
    """The run has finished training: an earlier attempt's superseded checkpoints may go."""
    if self.primary:
      shutil.rmtree(self.directory / _SUPERSEDED, ignore_errors=True)

  def _save(self, name, state, stats, epoch, extra):
    digest = {"state": tree_digest(state), "inputs": tree_digest(stats), "trainer": json_digest(extra)}
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              inputs=ocp.args.StandardSave(stats),
                              meta=ocp.args.JsonSave(to_json({**self.meta, "trainer": extra, "digest": digest})))
    failure = None
    with _native_stderr_held() as held:
      try:
        with _interrupts_held():
          self._managers[name].save(epoch, args=args, force=True)
      except Exception as e:  # noqa: BLE001  (orbax reports a failed write as OSError or ValueError)
        # let orbax's writer threads end now: left running, they fail again at exit, noisily
        with contextlib.suppress(Exception):
          self._managers[name].wait_until_finished()
        with contextlib.suppress(Exception):
          self._managers[name].close()  # joins its threads: their late echoes land in the held output
        # tensorstore's native callbacks may still fire into the closed loop for a moment; a failed
        # save ends the run anyway, so wait that moment out inside the held output
        time.sleep(_ECHO_GRACE_S)
        failure = e
        held.drop()  # their echoes of this failure (native tracebacks), which one line replaces
    if failure is not None:
      raise UserError(f"cannot save the {name} checkpoint in {self.directory}: {_write_failure(failure)}; "
                      "the previous checkpoint is kept") from failure

  def _restore(self, name, template, step=None):
    """The checkpoint of epoch `step` (default: the newest) and its trainer bookkeeping."""
    manager = self._managers[name]
    where = self.directory / name
    if step is None:
      step = manager.latest_step()
      if step is None:
        raise CheckpointError(f"no checkpoint in {where}")
    elif step not in (steps := list(manager.all_steps())):
      raise CheckpointError(f"no checkpoint of epoch {step} in {where} (it holds {steps})")
    saved = read_meta(manager, step, where)
    check_format(saved, where, step)
    _check_identity(saved, self.meta, where)
    state = restore_item(manager, step, template, where)
    check_digest(saved, "state", state, where, step)
    trainer = saved.get("trainer", {})
    # the trainer's bookkeeping (best epoch, history) goes into the results: it is checksummed too
    if json_digest(trainer) != saved.get("digest", {}).get("trainer"):
      raise CheckpointError(f"checkpoint {where}/{step} is damaged: its trainer record does not match the checksum "
                            "recorded when it was saved; restore another checkpoint or retrain")
    return state, trainer


def _check_own_entries(directory: pathlib.Path) -> None:
  """The names a run folder writes must be its own: no symbolic link (it would send a write,
  a truncation or a deletion elsewhere), and run.json a regular file."""
  for name in (".lock", "run.json", *KINDS, _SUPERSEDED):
    path = directory / name
    if path.is_symlink():
      raise CheckpointError(f"{path} is a symbolic link; a run folder's own files are never links: remove it")
  if (directory / "run.json").exists() and not (directory / "run.json").is_file():
    raise CheckpointError(f"{directory / 'run.json'} is not a regular file; remove it")


def _read_run_json(path: pathlib.Path, overwrite: bool) -> dict | None:
  try:
    saved = json.loads(path.read_text())
    if not isinstance(saved, dict):
      raise ValueError("not a JSON object")
    return saved
  except (OSError, UnicodeDecodeError, ValueError) as e:
    if overwrite:
      return None
    raise CheckpointError(f"{path} is unreadable ({e}); remove it or pass --overwrite") from e


def _supersede(directory: pathlib.Path) -> None:
  """Move an earlier attempt's checkpoints out of the way without deleting a finished one.

  A superseded/ already there holds the last attempt that was superseded (and never replaced
  by a completed one): it stays, and the interrupted attempt's checkpoints are dropped.
  """
  present = [k for k in KINDS if (directory / k).exists()]
  if not present:
    return
  target = directory / _SUPERSEDED
  if target.exists():
    for k in present:
      shutil.rmtree(directory / k, ignore_errors=True)
    return
  target.mkdir()
  for k in present:
    (directory / k).rename(target / k)
  logger.info("earlier checkpoints of this run moved to %s until this attempt completes", target)


# --------------------------------------------------------------------------- helpers


def reader(path) -> ocp.CheckpointManager:
  # read_only=True would log three warnings per open; create=False is enough not to write
  return ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(create=False))


def latest_step(path):
  try:
    return reader(path).latest_step()
  except Exception:  # noqa: BLE001 - an unreadable directory is simply not a candidate
    return None


def read_meta(manager, step, path) -> dict:
  try:
    out = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"])
  except Exception as e:  # noqa: BLE001 - orbax raises many types for a damaged file
    raise CheckpointError(f"checkpoint {path}/{step} is unreadable or corrupt: metadata: {_short(e)}") from e


def restore_item(manager, step, template, path):
  device = jax.local_devices()[0]  # each process of a multi-process run restores its own copy
  sharding = jax.sharding.SingleDeviceSharding(device)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), template)
  try:
    out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"checkpoint {path}/{step} is unreadable or corrupt: state: {_short(e)}") from e
  return out["state"]


def restore_stats(manager, step, path, meta):
  dims = meta["dims"]
  widths = {"image": tuple(dims["image_shape"]), "text": (dims["text_dim"],)}
  abstract = {m: {k: jax.ShapeDtypeStruct(widths[m], np.float32) for k in ("mean", "scale")} for m in widths}
  try:
    out = manager.restore(step, args=ocp.args.Composite(inputs=ocp.args.StandardRestore(abstract)))
  except Exception as e:  # noqa: BLE001
    raise CheckpointError(f"checkpoint {path}/{step} is unreadable or corrupt: inputs: {_short(e)}") from e
  return jax.tree.map(np.asarray, out["inputs"])



def check_format(meta: dict, path, step) -> None:
  found = meta.get("checkpoint_format", 1)
  if found != CHECKPOINT_FORMAT:
    raise CheckpointError(f"checkpoint {path}/{step} was written by jxhash {meta.get('jxhash_version', '0.1')} in "
                          f"checkpoint layout {found}; this jxhash ({__version__}) reads layout "
                          f"{CHECKPOINT_FORMAT}: retrain the run, or restore it with that version")


def check_digest(meta: dict, item: str, tree, path, step) -> None:
  """The restored `item` must hash to the checksum recorded when it was saved."""
  expected = meta.get("digest", {}).get(item)
  if expected is None:
    raise CheckpointError(f"checkpoint {path}/{step} records no checksum of its {item}: damaged metadata")
  if tree_digest(tree) != expected:
    raise CheckpointError(f"checkpoint {path}/{step} is damaged: its {item} does not match the checksum recorded "
                          "when it was saved; restore another checkpoint or retrain")


def check_run_json(run_json: pathlib.Path, meta: dict, path, step) -> None:
  """A run.json next to the checkpoint must describe the same run as the checkpoint itself."""
  if not run_json.is_file():
    return
  try:
    saved = json.loads(run_json.read_text())
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise CheckpointError(f"{run_json} is unreadable ({e}); the checkpoint {path}/{step} holds its own metadata: "
                          "remove the damaged run.json") from e
  diff = identity_diff(saved, meta) if isinstance(saved, dict) else [("run.json", saved, "an object")]
  if diff:
    raise CheckpointError(f"{run_json} no longer matches its checkpoint {path}/{step} ({describe_diff(diff)}; "
                          "run.json vs checkpoint)")


def _check_identity(saved: dict, current: dict, path) -> None:
  diff = identity_diff(saved, current)
  if diff:
    raise CheckpointError(f"checkpoint {path} belongs to a different run ({describe_diff(diff)}; checkpoint vs "
                          "this run); use another --checkpoint-dir, or --overwrite to replace it")


def _write_failure(e: Exception) -> str:
  """The reason a save failed: the OS's words where orbax's message carries an OS error code."""
  if isinstance(e, OSError):
    return fileio.describe_os_error(e)
  code = re.search(r"os_error_code='?(\d+)", str(e))
  return os.strerror(int(code.group(1))) if code else _short(e)


def _short(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:200] if text else ''}"
