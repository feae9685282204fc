"""Per-run training logs in TensorBoard's event format: losses and val mAP per epoch.

    tensorboard --logdir runs/          # one sub-folder per run: compare runs side by side

The writer is tensorboardX (pure Python, protobuf only): CLU's metric writers would do the same
but write summaries through `tf.summary`, which pulls in TensorFlow (hundreds of MB) for a few
scalars; tensorboardX writes the same event files that TensorBoard, `tbparse` and
`EventAccumulator` read, without it.

What is written, at step = epoch (1-based, the history's `epoch`):
  - every number of the run's history entry (`jxhash.train.FitResult.history`): the phase
    losses (`image/loss`, `text/loss`, ...; the mean over seeds and steps) and `val_map` at the
    epochs that evaluate (the mean over seeds);
  - with several vmapped seeds, each seed's value as `seed<k>/<name>` (k the model seed);
  - `config(dict)`: the run's settings once, as a text summary (`config`) and as TensorBoard
    hparams (scalars and strings; lists as text), so the HParams tab compares runs by setting.

`open(None)` (logging off) and processes other than process 0 of a multi-process run get a
`NoMetricLog`, which takes the same calls and writes nothing.

Synopsis:

    from jxhash import metric_log, train
    with metric_log.open("runs/my-run", config={"method": "dcmh", "bits": 16}) as log:
      result = train.fit(spec, config, data, options, metric_log=log)
"""

from __future__ import annotations

import json
import math
import numbers

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
  """

  def __init__(self, directory, *, purge_step: int | None = None):
    directory = fileio.require_writable_dir(directory, what="TensorBoard log folder")
    from tensorboardX import SummaryWriter
    self.directory = directory
    # purge_step: a run that continues from a checkpoint at epoch E writes from E + 1 on, and the
    # events a killed attempt wrote past E are dropped from TensorBoard's view of the log
    self._writer = SummaryWriter(logdir=str(directory), flush_secs=30, purge_step=purge_step)

  def scalars(self, step: int, values: dict) -> None:
    """Write each {tag: number} at `step`; non-finite values are written as they are."""
    for tag, value in values.items():
      self._writer.add_scalar(tag, float(value), int(step))

  def epoch(self, entry: dict, *, first_seed: int = 0) -> None:
    """Write a training history entry at its epoch (`epoch_scalars`)."""
    self.scalars(entry["epoch"], epoch_scalars(entry, first_seed=first_seed))

  def config(self, settings: dict) -> None:
    """The run's settings: a JSON text summary `config` and TensorBoard hparams."""
    settings = fileio.to_json(settings)
    text = json.dumps(settings, indent=2, sort_keys=True, default=str)
    # TensorBoard renders text summaries as markdown: indent to keep the JSON a code block
    self._writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)
    from tensorboardX.summary import hparams
    flat = {k: _hparam(v) for k, v in _flatten(settings).items()}
    writer = self._writer._get_file_writer()  # hparams go to this run's file, not a sub-run
    for summary in hparams(flat, {"val_map": math.nan}):
      writer.add_summary(summary)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()

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
