"""Per-run training logs in TensorBoard's event format: losses and val mAP per epoch.

    tensorboard --logdir runs/          # one sub-folder per run: compare runs side by side

The writer is tensorboardX (pure Python, protobuf only): CLU's metric writers would do the same
but write summaries through `tf.summary`, which pulls in TensorFlow (hundreds of MB) for a few
scalars; tensorboardX writes the same event files that TensorBoard, `tbparse` and
`EventAccumulator` read, without it. `MetricLog` uses its synchronous record writer and summary
protos (see the class docstring for why not its threaded `SummaryWriter`).

What is written, at step = epoch (1-based, the history's `epoch`):
  - every number of the run's history entry (`jxhash.training.trainer.FitResult.history`): the phase
    losses (`image/loss`, `text/loss`, ...; the mean over seeds and steps) and `val_map` at the
    epochs that evaluate (the mean over seeds);
  - with several vmapped seeds, each seed's value as `seed<k>/<name>` (k the model seed);
  - `config(dict)`: the run's settings once, as a text summary (`config`) and as TensorBoard
    hparams (scalars and strings; lists as text), so the HParams tab compares runs by setting.

`open(None)` (logging off) and processes other than process 0 of a multi-process run get a
`NoMetricLog`, which takes the same calls and writes nothing.

Synopsis:

    from jxhash.training import metric_log
    from jxhash.training import trainer
    with metric_log.open("runs/my-run", config={"method": "dcmh", "bits": 16}) as log:
      result = trainer.fit(spec, config, data, options, metric_log=log)
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import time

from jxhash import fileio

_NOT_SCALARS = ("epoch", "stage", "per_seed")


def epoch_scalars(entry: dict, *, first_seed: int = 0) -> dict:
  """{tag: value} of one history entry: its numbers, and `seed<k>/<name>` per seed.

  Args:
    entry: a `FitResult.history` entry, {"epoch", "stage", name: mean value, ...,
      "per_seed": {name: [value per seed]} (only with several seeds)}.
    first_seed: the model seed of seed index 0 (`TrainOptions.seed`).
  """
  out = {k: float(v) for k, v in entry.items() if k not in _NOT_SCALARS and isinstance(v, numbers.Real)}
  for name, values in entry.get("per_seed", {}).items():
    out.update({f"seed{first_seed + i}/{name}": float(v) for i, v in enumerate(values)})
  return out


class MetricLog:
  """One run's TensorBoard event file in `directory` (created if missing).

  A context manager; `close` flushes. Steps are epochs (`scalars(step, {...})`).

  Events go through tensorboardX's synchronous `EventsWriter` (its record format and summary
  protos), not its `SummaryWriter`: that one writes from a background thread, whose failure on a
  full disk cannot be caught and prints tracebacks after jxhash's own one-line error, at exit too.
  One event per epoch costs nothing to write in place. The file is created with the first epoch
  (the config waits for it), so a run refused before training leaves no log. A write that fails
  (a full disk, a removed folder) stops the log with one warning on the `jxhash` logger; training
  goes on.
  """

  def __init__(self, directory, *, purge_step: int | None = None):
    directory = fileio.require_writable_dir(directory, what="TensorBoard log folder")
    from tensorboardX.proto.event_pb2 import Event
    self.directory = directory
    self._event = Event
    self._purge_step = purge_step
    self._failed = False
    self._writer = None
    self._pending = []  # the config's summaries, written with the first epoch

  def _open(self) -> None:
    """Create the event file: at the first epoch, so a run refused before training writes none."""
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import SessionLog
    try:
      self.directory.mkdir(parents=True, exist_ok=True)
      self._writer = EventsWriter(str(self.directory / "events"))
    except OSError as e:
      self._fail(e)
      return
    self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))
    if self._purge_step is not None:
      # a run that continues from a checkpoint at epoch E writes from E + 1 on: TensorBoard drops
      # the events a killed attempt wrote at or past this step
      self._write(self._event(wall_time=time.time(), step=self._purge_step,
                              session_log=SessionLog(status=SessionLog.START)))
    for event in self._pending:
      self._write(event)
    self._pending = []

  def _fail(self, error: OSError) -> None:
    if not self._failed:
      logging.getLogger("jxhash").warning("TensorBoard log in %s stopped (%s); training goes on", self.directory,
                                          fileio.describe_os_error(error))
    self._failed = True

  def _write(self, event, flush: bool = False) -> None:
    if self._failed:
      return
    if self._writer is None:
      self._open()
      if self._failed:
        return
    try:
      self._writer.write_event(event)
      if flush:
        self._writer.flush()
    except OSError as e:
      self._fail(e)

  def _summary(self, summary, step: int = 0, *, pending: bool = False) -> None:
    event = self._event(wall_time=time.time(), step=int(step), summary=summary)
    if pending and self._writer is None:
      self._pending.append(event)
    else:
      self._write(event)

  def scalars(self, step: int, values: dict) -> None:
    """Write each {tag: number} at `step` (flushed: a killed run keeps every epoch it logged)."""
    from tensorboardX import summary
    for tag, value in values.items():
      self._summary(summary.scalar(tag, float(value)), step)
    self.flush()

  def epoch(self, entry: dict, *, first_seed: int = 0) -> None:
    """Write a training history entry at its epoch (`epoch_scalars`)."""
    self.scalars(entry["epoch"], epoch_scalars(entry, first_seed=first_seed))

  def config(self, settings: dict) -> None:
    """The run's settings: a JSON text summary `config` and TensorBoard hparams."""
    from tensorboardX import summary
    settings = fileio.to_json(settings)
    text = json.dumps(settings, indent=2, sort_keys=True, default=str)
    # TensorBoard renders text summaries as markdown: indent to keep the JSON a code block
    self._summary(summary.text("config", "\n".join("    " + line for line in text.splitlines())), pending=True)
    flat = {k: _hparam(v) for k, v in _flatten(settings).items()}
    for item in summary.hparams(flat, {"val_map": math.nan}):
      self._summary(item, pending=True)

  def flush(self) -> None:
    if not self._failed and self._writer is not None:
      try:
        self._writer.flush()
      except OSError as e:
        self._fail(e)

  def close(self) -> None:
    if self._writer is None:
      return
    try:
      if not self._failed:
        self._writer.flush()
      self._writer.close()
    except OSError as e:
      self._fail(e)
    self._writer = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class NoMetricLog:
  """The disabled log: every call of `MetricLog` is accepted and does nothing."""

  directory = None

  def scalars(self, step: int, values: dict) -> None:
    pass

  def epoch(self, entry: dict, *, first_seed: int = 0) -> None:
    pass

  def config(self, settings: dict) -> None:
    pass

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    pass


def open(directory, *, config: dict | None = None, purge_step: int | None = None) -> MetricLog | NoMetricLog:  # noqa: A001
  """A `MetricLog` in `directory` with `config` written, or a `NoMetricLog` when `directory` is
  None or this is not process 0 of a multi-process run (only process 0 writes run outputs).
  `purge_step`: the first epoch this attempt writes (earlier attempts' later events are dropped)."""
  import jax
  if directory is None or jax.process_index() != 0:
    return NoMetricLog()
  log = MetricLog(directory, purge_step=purge_step)
  if config is not None:
    log.config(config)
  return log


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _hparam(value):
  """A value TensorBoard's hparams accept: bool, int, float or str."""
  if isinstance(value, (bool, int, float, str)):
    return value
  return json.dumps(value, default=str)
