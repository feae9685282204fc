"""One experiment end to end, as a library call: check, load, fit, evaluate, write.

    from jxhash import experiment, settings
    s = settings.from_mapping({"method": "dcmh", "dataset": "synthetic", "bits": 16, "epochs": 20})
    result = experiment.run(s)
    result.map                                   # {"i2t": ..., "t2i": ...}
    codes = result.encoder().encode("image", x)  # in memory, no checkpoint round trip

`run` checks every input and output location before any data is read (`plan`), computes the
run's identity once (`jxhash.runs.identity`), and names the run from it. Outputs go under
`settings.output.workdir`: results/<name>.json, checkpoints/<name>/ and logs/<name>/ (TensorBoard
event files with the losses and val mAP of every epoch; `output.tensorboard=False` writes none).

A run resumes by itself: when its checkpoint folder holds this run's checkpoints (same
identity), training continues from the latest one; when its results file already holds this
run's results, nothing is trained or rewritten and those results are returned
(`Results.already_complete`). `output.restart` trains from scratch; `output.overwrite` also
replaces a finished run's files or another run's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any

from jxhash import config as config_lib
from jxhash import fileio
from jxhash.errors import UserError
from jxhash.settings import Settings, method_config

logger = logging.getLogger("jxhash.experiment")


@dataclasses.dataclass(frozen=True)
class Plan:
  """What `plan` checked: the method, its config, the loader options and where outputs go."""

  spec: Any
  config: Any
  data_options: dict
  data_dir: pathlib.Path | None
  workdir: pathlib.Path
  out: pathlib.Path | None
  results_dir: pathlib.Path | None
  checkpoint_root: pathlib.Path | None


def plan(s: Settings) -> Plan:
  """Check everything `s` names before any data is read; a UserError names the first fault."""
  from jxhash import data as data_lib
  from jxhash.data import augment as augment_lib
  from jxhash.methods import get_method
  spec = get_method(s.method.name)
  config = method_config(spec, s)
  schema = data_lib.schema(s.data.name)
  # strings (flags, --config.data.KEY=VALUE) are parsed by the schema; a config file's typed
  # values are checked by it; only the keys given are kept (the loader fills in the defaults)
  text = {k: v for k, v in s.data.options.items() if isinstance(v, str)}
  typed = {k: v for k, v in s.data.options.items() if not isinstance(v, str)}
  data_options = schema.parse(f"{k}={v}" for k, v in text.items())
  data_options.update({k: v for k, v in schema.check(typed).items() if k in typed})
  data_dir = None
  if s.data.dir is not None:
    data_dir = fileio.resolve(s.data.dir)
    if not data_dir.is_dir():
      raise UserError(f"--data-dir {data_dir} is not a directory")
  augment_lib.parse(s.train.augment)
  workdir = fileio.require_writable_dir(s.output.workdir, what="--workdir")
  out = None
  if s.output.out:
    given = workdir / pathlib.Path(s.output.out).expanduser()
    if given.is_symlink():  # resolving would write to wherever it points
      raise UserError(f"--out {given} is a symbolic link; a results file is never written through a link")
    out = fileio.require_writable_file(given, what="--out")
  results_dir = None if out else fileio.require_writable_dir(workdir / "results", what="results folder")
  checkpoint_root = None
  if s.output.checkpoint:
    root = workdir / (s.output.checkpoint_dir or "checkpoints")
    checkpoint_root = fileio.require_writable_dir(root, what="--checkpoint-dir")
  return Plan(spec, config, data_options, data_dir, workdir, out, results_dir, checkpoint_root)


def train_options(s: Settings, *, resume: bool):
  from jxhash.training import trainer
  t = s.train
  return trainer.TrainOptions(seed=t.seed, num_seeds=t.seeds, eval_every=s.eval.eval_every, normalize=t.normalize,
                            top_k=s.eval.top_k, pn=s.eval.pn, resume=resume, progress=s.output.progress,
                            stream=t.stream, prefetch=t.prefetch, augment=t.augment)


@dataclasses.dataclass
class Results:
  """What `run` returns.

  Attributes:
    results: the results dict, as written to `path` (README: its keys).
    path: the results file (None on processes other than 0 of a multi-process run).
    name: the run's name.
    checkpoint_dir: the run's checkpoint folder (None without checkpoints).
    already_complete: the results were found on disk; nothing was trained.
    fit: the trainer's `FitResult` (None when already complete).
  """

  results: dict
  path: pathlib.Path | None
  name: str
  checkpoint_dir: pathlib.Path | None
  already_complete: bool = False
  fit: Any = None
  spec: Any = None
  config: Any = None

  @property
  def map(self) -> dict:
    return self.results["map"]

  def encoder(self, seed: int = 0):
    """The fitted model as a `jxhash.checkpoint.Encoder` (in memory): `.encode(modality, x)`.

    A run found complete on disk is restored from its checkpoint instead.
    """
    from jxhash import checkpoint
    from jxhash.training.runstate import seed_slice
    if self.fit is None:
      if self.checkpoint_dir is None:
        raise UserError(f"run {self.name} was complete on disk and kept no checkpoint to encode with")
      return checkpoint.restore(self.checkpoint_dir, seed=seed)
    num_seeds = int(self.results.get("num_seeds", 1))
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < num_seeds:
      raise UserError(f"seed {seed!r} out of range: the run trained {num_seeds} seed(s)")
    return checkpoint.Encoder(method=self.spec.name, config=self.config, meta=self.results,
                              model=seed_slice(self.fit.state.model, seed), stats=self.fit.normalizer,
                              epoch=int(self.fit.state.epoch))


def run(s: Settings, *, processes: dict | None = None, init_timeout: int = 300, echo=print) -> Results:
  """Train and evaluate the experiment `s` (module docstring); `echo` receives the summary lines.

  Args:
    s: the settings.
    processes: multi-process start arguments for `jxhash.distributed.start` (None: one process).
    init_timeout: seconds to wait for every process to join.
  """
  from jxhash import checkpoint
  from jxhash.runs import identity
  from jxhash.training import metric_log
  from jxhash import distributed
  from jxhash.runs import results
  from jxhash.training import trainer
  from jxhash import data as data_lib
  p = plan(s)
  group = distributed.start(**processes, timeout=init_timeout) if processes is not None else None
  data = data_lib.load(s.data.name, p.data_dir, split=s.data.split, seed=s.data.split_seed, **p.data_options)
  distributed.agree_on_data(data)
  resume = not (s.output.restart or s.output.overwrite)
  options = train_options(s, resume=resume)
  ident = identity.run_identity(p.spec, p.config, data, options)
  _check_same_run(ident)
  name = s.output.name or identity.run_name(ident)
  out = p.out or p.results_dir / f"{name}.json"
  ck_dir = p.checkpoint_root / name if p.checkpoint_root is not None else None
  if resume:
    done = _finished_on_primary(out, _finished(out, ident, s.eval.top_k))
    if done is not None:
      echo(f"{name}: already complete; results in {out}" + (f", checkpoint in {ck_dir}" if ck_dir else "")
           + " (--overwrite trains it again)")
      return Results(done, out, name, ck_dir, already_complete=True, spec=p.spec, config=p.config)
  results.check_writable(out, ident, overwrite=s.output.overwrite)
  store = None
  if ck_dir is not None:
    store = checkpoint.CheckpointStore.open(ck_dir, checkpoint.metadata(ident), resume=resume,
                                            overwrite=s.output.overwrite)
    if group is not None:
      group.hint = lambda: _resume_hint(store.directory)
  start = store.latest_epoch() if store is not None and resume else None
  logs = p.workdir / "logs" / name if s.output.tensorboard else None
  log = metric_log.open(logs, config={"identity": ident, "settings": s.to_json()},
                        purge_step=(start or 0) + 1 if logs is not None else None)
  try:
    preset = f", preset {s.method.preset}" if s.method.preset else ""
    changed = describe_changes(p.spec, s)
    stages = p.spec.stages(p.config, int(data.train.size))
    epochs = " + ".join(f"{st.name} {st.epochs}" for st in stages) if len(stages) > 1 else str(stages[0].epochs)
    echo(f"{name}: {p.spec.name}{preset} on {data.name}, {p.config.bits} bits, epochs {epochs}, splits "
         f"{data.sizes()}, {options.num_seeds} seed(s), {len(distributed.devices())} device(s)"
         + (f"; set {changed}" if changed else ""))
    fit = trainer.fit(p.spec, p.config, data, options, store=store, metric_log=log)
    res = results.build(p.spec, p.config, data, options, fit, identity=ident,
                        extra={"run_name": name, "preset": s.method.preset,
                               "checkpoint": str(store.directory) if store else None})
    try:
      results.write(out, res)
    except UserError as e:
      hint = (f"; the trained model is in {store.directory}: run the same command again to evaluate it and "
              "write the results") if store else ""
      raise UserError(f"{e}{hint}") from e
  finally:
    log.close()
    if store is not None:
      store.close()
  return Results(res, out if distributed.is_primary() else None, name, ck_dir, fit=fit, spec=p.spec, config=p.config)


def describe_changes(spec, s: Settings) -> str:
  """'epochs=5 lr=0.1': the method fields that differ from the preset (or defaults)."""
  base = config_lib.apply_preset(spec, s.method.preset)
  config = method_config(spec, s)
  changed = [f.name for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(base, f.name)]
  return " ".join(f"{k}={config_lib.flag_text(getattr(config, k))}" for k in changed)


def _finished(out: pathlib.Path, ident: dict, top_k=()) -> dict | None:
  """The results at `out` if they are this run's (same identity), else None."""
  from jxhash.runs import identity
  from jxhash import distributed
  if not distributed.is_primary() or not out.is_file() or out.is_symlink():
    return None
  try:
    old = json.loads(out.read_text())
  except (OSError, UnicodeDecodeError, ValueError):
    return None
  if not isinstance(old, dict) or "map" not in old or identity.identity_diff(old, ident):
    return None
  # the cut-offs are not part of the identity (they change no model): results without one asked
  # for now are evaluated again from the checkpoint
  have = old.get("metrics", {}).get("i2t", {}).get("map@k", {})
  if not isinstance(have, dict) or not {str(k) for k in top_k} <= set(have):
    return None
  return old


def _finished_on_primary(out: pathlib.Path, mine: dict | None) -> dict | None:
  """In a multi-process run every process follows process 0's verdict on `_finished`."""
  from jxhash import distributed
  if distributed.broadcast_float(1.0 if mine is not None else 0.0) != 1.0:
    return None
  return mine if mine is not None else {"map": None, "run_name": out.stem}


def _check_same_run(ident: dict) -> None:
  """Every process of a multi-process run must be asked for the same run (same flags)."""
  from jxhash.runs import identity
  from jxhash import distributed
  differ = distributed.differing_processes(identity.identity_hash(ident, length=64))
  if differ:
    raise UserError(f"process(es) {', '.join(map(str, differ))} were started with other settings than process 0 "
                    "(method, config, seeds, data options or normalisation); give every process the same arguments")


def _resume_hint(directory) -> str:
  """What a stopped multi-process run leaves behind (read from the disk, not from orbax's state)."""
  steps = [int(p.name) for p in (pathlib.Path(directory) / "latest").glob("*") if p.name.isdigit()]
  if not steps:
    return f"no checkpoint was saved yet in {directory}"
  return f"the last checkpoint (epoch {max(steps)}) in {directory} is intact: start every process again to continue"
