"""The generic trainer: stages -> epochs -> phases -> batches, for any registered method.

It knows no method: a `MethodSpec` (`jxhash.spec`) supplies the state, the stages and the
steps. `fit` normalises the inputs (`jxhash.training.inputs`), puts the training split on the device
mesh, runs each stage's epochs as compiled programs (`jxhash.training.epochs`, or `jxhash.training.streaming`
when images stay on the host), evaluates on the validation split (`jxhash.training.evaluation`), keeps
the best state, saves checkpoints through the store it is handed so that an interrupted run
resumes exactly, and finally evaluates on the test protocol.

Seeds: the state carries a leading seed axis and the epoch program is vmapped over it, so
`num_seeds=S` trains S independent models (model seeds seed, seed+1, ...) in one program on
the same data split; S = 1 is the ordinary run.

Progress goes to the `jxhash.training` logger (resume and stage messages) and to a progress bar
(`jxhash.training.progress`: sparse lines when stderr is not a terminal); each epoch's history entry
also to an optional `jxhash.training.metric_log` (TensorBoard).

Multi-process runs (`jxhash.distributed.start` first; docs/multiprocess.md): every process calls
`fit` with the same arguments and runs the same compiled epochs in the same order. Evaluation
is local to each process (on its own copy of the replicated state, no collective); model
selection follows process 0's validation score, so that every process saves the same best
checkpoint; the returned state is this process's copy.

Synopsis:

    from jxhash import data, methods
    from jxhash.training import trainer
    ds = data.load("synthetic")
    spec = methods.get_method("dcmh")
    result = trainer.fit(spec, spec.Config(bits=16, epochs=20), ds, trainer.TrainOptions())
    result.final["i2t"]["map"], result.final["t2i"]["map"]
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from jxhash import distributed
from jxhash.training import progress
from jxhash.data import CrossModalData
from jxhash.data import augment as augment_lib
from jxhash.data.core import take_rows
from jxhash.training.epochs import compile_epoch, compile_finish, stage_bounds
from jxhash.errors import TrainingDiverged, TrainingInterrupted, UserError
from jxhash.training.evaluation import average_over_seeds, evaluate, mean_map
from jxhash.training.inputs import fit_normalizer, normalize, tokens, training_arrays
from jxhash.training.runstate import RunState, init_state, seed_slice
from jxhash.spec import Dims, MethodSpec
from jxhash.training.streaming import StreamedEpoch

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  """Trainer settings that no method owns.

  Attributes:
    seed: model seed (network init, buffers, batch order); seeds seed .. seed+S-1 with S
      = num_seeds. The data split has its own seed (see `jxhash.data.load`).
    num_seeds: independent models trained together (vmapped).
    eval_every: evaluate on the val split every this many epochs (0: only at the end of
      each stage), and save the latest checkpoint at the same epochs. Model selection uses
      val only, never the query set; with several seeds it picks one epoch for all of them,
      by their mean val mAP.
    normalize: input normalisation with training-split statistics, per modality:
      "standardize" (zero mean, unit variance), "center" or "none". Stored in checkpoints.
    top_k: mAP@k cut-offs reported at the end (besides mAP@all).
    pn: the N of the precision@N curve reported at the end.
    resume: continue from the store's latest checkpoint if it has one.
    progress: show a tqdm bar.
    devices: devices of the data mesh (None: all).
    stream: read image batches from the host each step instead of holding the training
      images on the device. None: for pixels (in memory or a lazy row source), else not
      (`jxhash.training.streaming`); small feature MLPs gain from the scanned epoch instead.
    prefetch: batches read ahead on a background thread when streaming.
    augment: pixel augmentation applied on device in every training step, e.g. "flip" or
      "flip+shift:16" (`jxhash.data.augment`); "none" as in the papers.
  """

  seed: int = 0
  num_seeds: int = 1
  eval_every: int = 10
  normalize: str = "standardize"
  top_k: tuple = (100, 1000)
  pn: tuple = (1, 5, 10, 20, 50, 100, 200, 500, 1000)
  resume: bool = False
  progress: bool = True
  devices: tuple | None = None
  stream: bool | None = None
  prefetch: int = 2
  augment: str = "none"


@dataclasses.dataclass
class FitResult:
  """What `fit` returns.

  Attributes:
    state: the selected RunState (best on val, else the last).
    final: per direction ("i2t", "t2i"), per seed-averaged metrics on query vs retrieval.
    per_seed: list over seeds of {"i2t": {...}, "t2i": {...}} metrics.
    history: one dict per epoch (epoch, stage, losses, val mAP where evaluated; means over
      seeds, and with several seeds "per_seed": {name: [value per seed]}).
    selected: "best-val@<epoch>" ("best-val@<stage>:<epoch in stage>" for methods of several
      stages) or "last".
    train_time: seconds spent in training epochs (compilation included).
    normalizer: the input statistics used.
  """

  state: RunState
  final: dict
  per_seed: list
  history: list
  selected: str
  train_time: float
  normalizer: dict


@dataclasses.dataclass
class _Selection:
  """Best-on-val bookkeeping (saved with the latest checkpoint, so a resume keeps it)."""

  score: float = -math.inf
  epoch: int | None = None
  state: RunState | None = None
  history: list = dataclasses.field(default_factory=list)


def fit(spec: MethodSpec, config, data: CrossModalData, options: TrainOptions = TrainOptions(), *,
        store=None, metric_log=None) -> FitResult:
  """Train `spec` with `config` on `data`, select on val, evaluate query vs retrieval.

  Args:
    spec: the method.
    config: an instance of spec.Config.
    data: the dataset; its train split is trained on, val selects, query/retrieval test.
    options: trainer settings.
    store: a `jxhash.checkpoint.CheckpointStore` for this run (None: no checkpoints).
    metric_log: a `jxhash.training.metric_log.MetricLog` that gets every history entry (None: none);
      the caller opens and closes it.

  Raises:
    TrainingDiverged: a loss became non-finite (the last checkpoint is kept).
    UserError: a config, option or dataset that cannot train.
  """
  if not isinstance(config, spec.Config):
    raise UserError(f"config for {spec.name!r} must be a {spec.Config.__name__}, got {type(config).__name__}")
  aug = augment_lib.parse(options.augment)
  if aug.active and not data.is_pixels:
    raise UserError(f"augment={options.augment!r} applies to pixel images; dataset {data.name!r} has image features")
  streamed = (data.is_pixels or not data.image_in_memory) if options.stream is None else options.stream
  num_train = int(data.train.size)
  if config.batch_size > num_train:
    raise UserError(f"batch_size {config.batch_size} is larger than the {num_train} training items of "
                    f"{data.name!r}; use --batch-size {num_train} or less")
  mesh = distributed.make_mesh(options.devices)
  stats = fit_normalizer(data, options.normalize)
  stages = spec.stages(config, num_train)
  bounds = stage_bounds(stages)
  total = bounds[-1][1] if bounds else 0

  dims = Dims.of(data)
  state = init_state(spec, config, dims, num_train, seed=options.seed, num_seeds=options.num_seeds)
  need = spec.image_matrix_need(config, dims)
  if streamed and need:  # after init, whose refusals name the input at fault
    raise UserError(f"{spec.name} cannot stream images: it needs the whole training image matrix on the "
                    f"device ({need}); load the images into memory or train on features")
  state, selection = _start(spec, config, state, store, options, total,
                            functools.partial(_training_rows, data, stats), dims)
  state = distributed.replicate(state, mesh)
  arrays = training_arrays(data, stats, supervised=spec.supervised, image=not streamed)
  arrays = distributed.replicate({k: jnp.asarray(v) for k, v in arrays.items()}, mesh)

  def make_epoch(stage):
    if streamed:
      return StreamedEpoch(stage, mesh, aug, take_rows(data.image, data.train),
                           functools.partial(normalize, stats, "image"), options.prefetch)
    return compile_epoch(stage, mesh, aug)

  compiled = {}
  has_val = data.val.size > 0
  t0 = time.perf_counter()
  bar = progress.bar(total, int(state.epoch), spec.name, options.progress)
  done = int(state.epoch)  # epochs completed, for the message of an interruption
  try:
    for epoch in range(int(state.epoch), total):
      s = next(i for i, (a, b) in enumerate(bounds) if a <= epoch < b)
      stage, (first, end) = stages[s], bounds[s]
      if s not in compiled:
        compiled[s] = make_epoch(stage)
      state, logs = compiled[s](state, arrays)
      logs = {k: np.asarray(v) for k, v in logs.items()}  # each (seeds, steps)
      _check_finite(logs, stage.name, epoch + 1)
      last_of_stage = epoch + 1 == end
      if last_of_stage and stage.finish is not None:
        state = compile_finish(stage)(state, arrays)
      entry = {"epoch": epoch + 1, "stage": stage.name, **{k: float(v.mean()) for k, v in logs.items()}}
      due = options.eval_every and (epoch + 1 - first) % options.eval_every == 0
      seeds = {k: v.mean(axis=1).tolist() for k, v in logs.items()}
      if stage.evaluate and has_val and (due or last_of_stage):
        entry["val_map"], seeds["val_map"] = _select(spec, state, data, stats, options, selection, store, epoch + 1)
      if options.num_seeds > 1:  # the mean hides the spread: keep each seed's value
        entry["per_seed"] = seeds
      selection.history.append(entry)
      if metric_log is not None:
        metric_log.epoch(entry, first_seed=options.seed)
      bar.set_postfix({k: f"{v:.4g}" for k, v in entry.items() if k not in ("epoch", "stage", "per_seed")},
                      refresh=False)
      bar.update(1)
      done = epoch + 1
      if store is not None and (due or last_of_stage):
        store.save_latest(state, stats, epoch + 1, extra={"best_score": selection.score,
                                                          "best_epoch": selection.epoch,
                                                          "history": selection.history})
  except KeyboardInterrupt:
    saved = store.latest_epoch() if store is not None else None
    where = (f"the last checkpoint (epoch {saved}) is in {store.directory}: run the same command again to continue"
             if saved is not None else "no checkpoint was saved")
    raise TrainingInterrupted(f"{spec.name} stopped after {done} of {total} epochs; {where}") from None
  finally:
    bar.close()
    if store is not None:
      store.wait()
  if store is not None:
    store.complete()
  train_time = time.perf_counter() - t0

  selected = "last"
  if selection.epoch is not None:
    selected = f"best-val@{stage_epoch(stages, bounds, selection.epoch)}"
    if selection.epoch != int(state.epoch):
      # after a resume the best state may predate this process: read it back from the store
      state = selection.state if selection.state is not None else store.restore_best(state, selection.epoch)
  state = distributed.local_copy(state)
  per_seed = [evaluate(spec, seed_slice(state.model, i), data, stats, top_k=options.top_k, pn=options.pn)
              for i in range(options.num_seeds)]
  return FitResult(state=state, final=average_over_seeds(per_seed), per_seed=per_seed,
                   history=selection.history, selected=selected, train_time=train_time, normalizer=stats)


def stage_epoch(stages, bounds, epoch: int) -> str:
  """A global epoch as the user counts it: "7" for one stage, "hash:3" (epoch 3 of the stage
  named hash) when a method has several, so pre-training epochs are not counted in."""
  if len(stages) == 1:
    return str(epoch)
  s = next(i for i, (a, b) in enumerate(bounds) if a < epoch <= b)
  return f"{stages[s].name}:{epoch - bounds[s][0]}"


def _training_rows(data: CrossModalData, stats: dict, modality: str, chunk: int):
  """The normalised training rows of `modality`, in order, `chunk` at a time (numpy): a
  `MethodSpec.prepare` pass that reads row sources (streamed pixels) a chunk at a time."""
  source = take_rows(getattr(data, modality), data.train)
  for a in range(0, int(source.shape[0]), chunk):
    rows = np.asarray(source[np.arange(a, min(a + chunk, int(source.shape[0])))])
    yield normalize(stats, modality, rows, tokens=tokens(data, modality))


def _start(spec, config, state: RunState, store, options: TrainOptions, total: int, rows, dims: Dims
           ) -> tuple[RunState, _Selection]:
  """The state to train from: the store's latest checkpoint when resuming, else a fresh
  (optionally warm-started, then prepared) one, with the selection bookkeeping that goes with it."""
  if store is not None and options.resume and store.has_latest():
    state, extra = store.restore_latest(state)
    logger.info("resumed %s from epoch %d of %d", spec.name, int(state.epoch), total)
    return state, _Selection(score=extra.get("best_score", -math.inf), epoch=extra.get("best_epoch"),
                             history=extra.get("history", []))
  if spec.warm_start is not None:
    state = state.replace(model=spec.warm_start(state.model, config))
  if spec.prepare is not None:
    state = state.replace(model=spec.prepare(state.model, config, dims, rows))
  return state, _Selection()


def _select(spec, state: RunState, data, stats, options: TrainOptions, selection: _Selection, store,
            epoch: int) -> tuple[float, list]:
  """Score every seed on val; keep the state if the mean over seeds is the best so far.
  Returns the mean and the per-seed scores.

  With several processes each scores its own copy and all follow process 0's score, so that
  they agree on every save (a checkpoint save needs all of them)."""
  model = distributed.local_copy(state.model)
  scores = [mean_map(evaluate(spec, seed_slice(model, i), data, stats, queries="val", full=False))
            for i in range(options.num_seeds)]
  score = distributed.broadcast_float(float(np.mean(scores)))
  if score > selection.score:
    selection.score, selection.epoch = score, epoch
    selection.state = jax.device_get(distributed.local_copy(state))
    if store is not None:
      store.save_best(state, stats, epoch)
  return score, scores


def _check_finite(logs: dict, stage: str, epoch: int) -> None:
  for name, values in logs.items():
    bad = ~np.isfinite(values)
    if bad.any():
      seed, step = np.argwhere(bad)[0]
      raise TrainingDiverged(f"non-finite {name.split('/', 1)[1]} in stage {stage!r}, phase "
                             f"{name.split('/')[0]!r}, epoch {epoch}, step {step + 1} (seed index {seed}); "
                             "the last good checkpoint is kept")
