"""The generic trainer: stages -> epochs -> phases -> batches, for any registered method.

It knows no method. A `MethodSpec` supplies the state, the stages and the steps; this module
normalises the inputs, puts the training split on the device mesh, compiles each stage's
epoch as one program (a `lax.scan` over the epoch's batches: one dispatch per epoch, no
per-batch host work), evaluates on the validation split, keeps the best state, and saves
checkpoints so that an interrupted run resumes exactly.

Streaming: for pixel images (a stack in memory or left on disk as a lazy row source,
`CrossModalData.image_in_memory` False), or when `TrainOptions.stream` is set, the images stay on
the host and each batch's rows are read, copied to the device and trained on by a jitted step,
with a background thread reading ahead (`data.prefetch`). Batches, keys and steps are the same
as the scanned epoch's, so both paths train the same model (tested). Text, labels and the
methods' buffers stay on the device either way.

Seeds: the state carries a leading seed axis and the epoch program is `vmap`ped over it, so
`num_seeds=S` trains S independent models (model seeds seed, seed+1, ...) in one program on
the same data split; S = 1 is the ordinary run.

Synopsis:

    from jxhash import data, methods, train
    ds = data.load("synthetic")
    spec = methods.get_method("dcmh")
    result = train.fit(spec, spec.Config(bits=16, epochs=20), ds, train.TrainOptions())
    result.final["i2t"]["map"], result.final["t2i"]["map"]
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jxhash import losses, metrics, parallel
from jxhash.data import CrossModalData
from jxhash.data import augment as augment_lib
from jxhash.data.core import read_rows, take_rows
from jxhash.data.prefetch import prefetch
from jxhash.errors import UserError
from jxhash.methods.base import MethodSpec, Stage

DIRECTIONS = {"i2t": ("image", "text"), "t2i": ("text", "image")}


class TrainingDiverged(RuntimeError):
  """A loss became NaN or inf; the message names the stage, phase and epoch."""


@flax.struct.dataclass
class RunState:
  """Everything that evolves during training, one pytree (what checkpoints hold).

  Attributes:
    model: the method's state with a leading seed axis on every leaf.
    rng: (S, 2) uint32 raw PRNG keys, one per seed.
    epoch: int32 scalar, epochs completed over all stages.
  """

  model: Any
  rng: jax.Array
  epoch: jax.Array


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
      images on the device. None: for pixels (in memory or a lazy row source), else not. A
      CNN step is long enough that per-step dispatch costs nothing, and XLA:CPU runs
      convolutions inside a scanned loop about 7x slower than as separate steps
      (benchmarks/PIXELS.md); small feature MLPs gain from the scanned epoch instead.
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
    history: one dict per evaluation or epoch log (epoch, stage, losses, val mAP).
    selected: "best-val@<epoch>" or "last".
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


# --------------------------------------------------------------------------- inputs


def fit_normalizer(data: CrossModalData, mode: str) -> dict:
  """Per-modality (mean, scale) from the training split; identity for pixels or mode "none".

  Returns:
    {"image": {"mean": (D,), "scale": (D,)}, "text": {...}} float32 numpy arrays.
  """
  if mode not in ("standardize", "center", "none"):
    raise UserError(f"normalize must be 'standardize', 'center' or 'none', got {mode!r}")
  stats = {}
  for m in ("image", "text"):
    source = getattr(data, m)
    width = tuple(source.shape[1:])
    if mode == "none" or len(width) != 1:
      mean, scale = np.zeros(width, np.float32), np.ones(width, np.float32)
    else:
      x = read_rows(source, data.train).astype(np.float64)
      mean = x.mean(0)
      # constant columns (a tag never used in training) keep scale 1 instead of dividing by 0
      scale = x.std(0) if mode == "standardize" else np.ones(width)
      scale = np.where(scale > 1e-8, scale, 1.0)
    stats[m] = {"mean": np.asarray(mean, np.float32), "scale": np.asarray(scale, np.float32)}
  return stats


def normalize(stats: dict, modality: str, x) -> np.ndarray:
  """Apply `fit_normalizer` statistics to raw inputs of one modality."""
  x = np.asarray(x)
  if x.ndim != 2:
    return x
  s = stats[modality]
  if x.shape[1] != s["mean"].shape[0]:
    raise UserError(f"{modality} inputs have width {x.shape[1]}, the model expects {s['mean'].shape[0]}")
  return ((x - s["mean"]) / s["scale"]).astype(np.float32)


def training_arrays(spec: MethodSpec, data: CrossModalData, stats: dict, *, image: bool = True) -> dict:
  """The training split as the dict handed to every step (labels only for supervised methods).

  image=False leaves the image out (the streamed path reads it batch by batch).
  """
  arrays = {m: normalize(stats, m, getattr(data, m)[data.train]) for m in (("image", "text") if image else ("text",))}
  if spec.supervised:
    arrays["labels"] = data.labels[data.train].astype(np.float32)
  return arrays


# --------------------------------------------------------------------------- state


def init_state(spec: MethodSpec, config, dims: dict, num_train: int, *, seed: int = 0,
               num_seeds: int = 1) -> RunState:
  """The initial RunState: `num_seeds` models from model seeds seed, seed+1, ..."""
  if num_seeds < 1:
    raise UserError(f"num_seeds must be >= 1, got {num_seeds}")
  keys = jnp.stack([jax.random.PRNGKey(seed + i) for i in range(num_seeds)])
  init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
  # one compiled program: op-by-op eager init of a few networks costs seconds of dispatch
  model = jax.jit(jax.vmap(lambda k: spec.init(k, config, dims, num_train)))(init_keys)
  return RunState(model=model, rng=keys, epoch=jnp.zeros((), jnp.int32))


def abstract_state(spec: MethodSpec, config, dims: dict, num_train: int, num_seeds: int = 1):
  """Shapes and dtypes of the RunState, without allocating it (for checkpoint restore)."""
  return jax.eval_shape(functools.partial(init_state, spec, config, dims, num_train,
                                          num_seeds=num_seeds))


def seed_slice(tree, i: int):
  """The model of seed i from a state with a leading seed axis."""
  return jax.tree.map(lambda x: x[i], tree)


# --------------------------------------------------------------------------- epochs


_AUGMENT_SALT = 0x617567  # folds a step's key into its augmentation key, apart from the method's use


def _phase_plan(phase, key, num_train: int):
  """(batches (steps, bs) int32 row positions, step keys (steps, 2)) of one phase of one seed."""
  bs = min(phase.batch_size, num_train)
  steps = max(1, num_train // bs)
  perm_key, step_key = jax.random.split(key)
  batches = jax.random.permutation(perm_key, num_train)[:steps * bs].reshape(steps, bs)
  return batches, jax.random.split(step_key, steps)


def _epoch_plan(rng, epoch, *, stage: Stage, num_train: int) -> list:
  """`_phase_plan` of every phase of one seed's epoch: the batch order both paths follow."""
  key = jax.random.fold_in(rng, epoch)
  return [_phase_plan(phase, jax.random.fold_in(key, i), num_train) for i, phase in enumerate(stage.phases)]


def _batch(data: dict, index, key, mesh, aug: augment_lib.Augment, image=None) -> dict:
  """A step's batch: rows `index` of the device arrays (plus streamed `image` rows), sharded."""
  index = parallel.shard_rows(index, mesh)
  batch = {name: parallel.shard_rows(x[index], mesh) for name, x in data.items()}
  if image is not None:
    batch["image"] = parallel.shard_rows(image, mesh)
  if aug.active:
    batch["image"] = augment_lib.augment_images(jax.random.fold_in(key, _AUGMENT_SALT), batch["image"], aug)
  batch["index"] = index
  return batch


def _epoch(model, rng, epoch, data, *, stage: Stage, mesh, aug: augment_lib.Augment):
  """One epoch of one seed: every phase over shuffled batches, then end_of_epoch."""
  num_train = jax.tree.leaves(data)[0].shape[0]
  logs = {}
  for phase, (batches, keys) in zip(stage.phases, _epoch_plan(rng, epoch, stage=stage, num_train=num_train)):

    def body(model, inputs, phase=phase):
      index, k = inputs
      return phase.step(model, _batch(data, index, k, mesh, aug), data, k)

    # per-step values come back (steps scalars, negligible) so a divergence can name its step
    model, phase_logs = jax.lax.scan(body, model, (batches, keys))
    logs.update({f"{phase.name}/{k}": v for k, v in phase_logs.items()})
  if stage.end_of_epoch is not None:
    model = stage.end_of_epoch(model, data)
  return model, logs


def compile_epoch(stage: Stage, mesh, aug: augment_lib.Augment = augment_lib.Augment()) -> Callable:
  """(RunState, data) -> (RunState, logs): one jitted epoch, vmapped over seeds, state donated."""
  one_seed = functools.partial(_epoch, stage=stage, mesh=mesh, aug=aug)

  def run(state: RunState, data):
    model, logs = _over_seeds(one_seed, (0, 0, None, None))(state.model, state.rng, state.epoch, data)
    return state.replace(model=model, epoch=state.epoch + 1), logs

  return jax.jit(run, donate_argnums=0)


def _over_seeds(fn, in_axes):
  """vmap over the leading seed axis, or for a single seed drop the axis and call fn directly.

  A vmap over a size-1 axis is not free on CPU: XLA then computes the large weight gradients
  transposed and transposes them back in every update (measured 2.3x slower for a DCMH epoch,
  benchmarks/TRAIN.md). The seed count is static, so this is a trace-time branch.
  """
  vmapped = jax.vmap(fn, in_axes=in_axes)

  def call(*args):
    first = next(a for a, axis in zip(args, in_axes) if axis == 0)
    if jax.tree.leaves(first)[0].shape[0] != 1:
      return vmapped(*args)
    squeezed = [jax.tree.map(lambda x: x[0], a) if axis == 0 else a for a, axis in zip(args, in_axes)]
    return jax.tree.map(lambda x: x[None], fn(*squeezed))

  return call


def compile_finish(stage: Stage) -> Callable:
  """(RunState, data) -> RunState: the stage's `finish` for every seed, state donated."""

  def run(state: RunState, data):
    return state.replace(model=_over_seeds(stage.finish, (0, None))(state.model, data))

  return jax.jit(run, donate_argnums=0)


class StreamedEpoch:
  """One epoch of a stage with the images streamed from the host (the module docstring).

  `run(state, data)` matches `compile_epoch(stage, mesh, aug)(state, data)` with `data` lacking
  "image": it draws the same batch order and step keys, reads each batch's image rows (S seeds
  × bs) from `images` on a prefetch thread, and runs a jitted step per batch.

  Args:
    stage: the stage.
    mesh: the data mesh.
    aug: on-device augmentation.
    images: the training split's image rows (array or row source), raw (unnormalised).
    transform: host function applied to each batch of rows (the input normalisation).
    prefetch: batches read ahead.
  """

  def __init__(self, stage: Stage, mesh, aug: augment_lib.Augment, images, transform, prefetch: int = 2):
    self.stage, self.mesh, self.images, self.transform, self.prefetch = stage, mesh, images, transform, prefetch
    num_train = images.shape[0]
    plan = functools.partial(_epoch_plan, stage=stage, num_train=num_train)
    self._plan = jax.jit(_over_seeds(plan, (0, None)))
    self._steps = [self._compile_step(phase, aug) for phase in stage.phases]
    self._end = None
    if stage.end_of_epoch is not None:
      self._end = jax.jit(_over_seeds(stage.end_of_epoch, (0, None)), donate_argnums=0)

  def _compile_step(self, phase, aug):
    def one_seed(model, index, image, key, data):
      return phase.step(model, _batch(data, index, key, self.mesh, aug, image=image), data, key)

    def run(model, index, image, key, data):
      return _over_seeds(one_seed, (0, 0, 0, 0, None))(model, index, image, key, data)

    return jax.jit(run, donate_argnums=0)

  def _batches(self, batches: np.ndarray, keys: np.ndarray):
    """Device (index (S, bs), image (S, bs, ...), key (S, 2)) of every step, read on demand."""
    seeds, steps, bs = batches.shape
    sharded = NamedSharding(self.mesh, P(None, parallel.DATA_AXIS))
    if bs % self.mesh.shape[parallel.DATA_AXIS]:
      sharded = NamedSharding(self.mesh, P())
    for t in range(steps):
      index = batches[:, t]
      rows = self.transform(np.asarray(self.images[index.reshape(-1)]))
      image = rows.reshape((seeds, bs) + rows.shape[1:])
      yield (jax.device_put(index, sharded), jax.device_put(image, sharded),
             parallel.replicate(keys[:, t], self.mesh))

  def run(self, state: RunState, data: dict) -> tuple[RunState, dict]:
    plan = jax.device_get(self._plan(state.rng, state.epoch))
    model, logs = state.model, {}
    for phase, step, (batches, keys) in zip(self.stage.phases, self._steps, plan):
      outs = []
      for index, image, key in prefetch(self._batches(batches, keys), self.prefetch):
        model, out = step(model, index, image, key, data)
        outs.append(out)
      logs.update({f"{phase.name}/{k}": jnp.stack([o[k] for o in outs], axis=1) for k in outs[0]})
    if self._end is not None:
      model = self._end(model, data)
    return state.replace(model=model, epoch=state.epoch + 1), logs

  __call__ = run


def stage_bounds(stages) -> list[tuple[int, int]]:
  """[(first_epoch, end_epoch)] of each stage in the global epoch count."""
  bounds, start = [], 0
  for s in stages:
    bounds.append((start, start + s.epochs))
    start += s.epochs
  return bounds


# --------------------------------------------------------------------------- evaluation


def encode(spec: MethodSpec, model, modality: str, x, *, chunk: int | None = None,
           transform: Callable | None = None) -> np.ndarray:
  """Binary ±1 codes (N, K) int8 of inputs `x`, for one seed's model.

  Args:
    x: (N, ...) already-normalised inputs, or a row source / raw array with `transform`.
    chunk: rows per encoder call (default 4096, 256 for images); the last chunk is padded so
      the encoder compiles once.
    transform: applied to each chunk of rows read from `x` (e.g. the input normalisation).
  """
  if isinstance(x, np.ndarray) or not hasattr(x, "shape"):
    x = np.asarray(x)
  chunk = chunk or (256 if len(x.shape) == 4 else 4096)
  fn = _encoder(spec, modality)
  out = []
  for start in range(0, x.shape[0], chunk):
    part = np.asarray(x[start:start + chunk])
    if transform is not None:
      part = transform(part)
    pad = chunk - part.shape[0] if x.shape[0] > chunk else 0
    if pad:
      part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], part.dtype)])
    codes = np.asarray(fn(model, part))
    out.append(codes[:codes.shape[0] - pad])
  return np.concatenate(out).astype(np.int8)


@functools.lru_cache(maxsize=None)
def _encoder(spec: MethodSpec, modality: str):
  return jax.jit(lambda model, x: losses.binarize(spec.encode(model, modality, x)))


def evaluate(spec: MethodSpec, model, data: CrossModalData, stats: dict, *, queries: str = "query",
             full: bool = True, top_k=(), pn=()) -> dict:
  """Cross-modal retrieval metrics of one seed's model.

  Args:
    queries: "query" (the test protocol: query vs retrieval) or "val" (model selection:
      val items vs the retrieval set without them).
    full: all metrics (`metrics.evaluate`) or only mAP@all.

  Returns:
    {"i2t": {...}, "t2i": {...}}: image queries against text database and the reverse.
  """
  q_idx = getattr(data, queries)
  db_idx = np.setdiff1d(data.retrieval, q_idx) if queries == "val" else data.retrieval
  codes = {}
  for m in ("image", "text"):
    for split, idx in (("q", q_idx), ("db", db_idx)):
      # chunk by chunk: an image stack on disk is read (and normalised) a chunk at a time
      codes[m, split] = encode(spec, model, m, take_rows(getattr(data, m), idx),
                               transform=functools.partial(normalize, stats, m))
  out = {}
  for name, (qm, dbm) in DIRECTIONS.items():
    args = (codes[qm, "q"], codes[dbm, "db"], data.labels[q_idx], data.labels[db_idx])
    if full:
      out[name] = metrics.evaluate(*args, top_k=top_k, pn=pn)
    else:
      out[name] = {"map": float(metrics.mean_average_precision(*args))}
  return out


def _mean_map(result: dict) -> float:
  return 0.5 * (result["i2t"]["map"] + result["t2i"]["map"])


def average_over_seeds(per_seed: list) -> dict:
  """Mean of every scalar metric over seeds, plus "map_std" per direction."""
  out = {}
  for direction in DIRECTIONS:
    rows = [r[direction] for r in per_seed]
    mean = jax.tree.map(lambda *v: float(np.mean(v)), *rows)
    mean["map_std"] = float(np.std([r["map"] for r in rows]))
    out[direction] = mean
  return out


# --------------------------------------------------------------------------- fit


def fit(spec: MethodSpec, config, data: CrossModalData, options: TrainOptions = TrainOptions(), *,
        store=None, log: Callable[[str], None] = print) -> FitResult:
  """Train `spec` with `config` on `data`, select on val, evaluate query vs retrieval.

  Args:
    spec: the method.
    config: an instance of spec.Config.
    data: the dataset; its train split is trained on, val selects, query/retrieval test.
    options: trainer settings.
    store: a `jxhash.checkpoint.CheckpointStore` for this run (None: no checkpoints).
    log: where one-line messages go.

  Raises:
    TrainingDiverged: a loss became non-finite (the last checkpoint is kept).
  """
  if not isinstance(config, spec.Config):
    raise UserError(f"config for {spec.name!r} must be a {spec.Config.__name__}, got {type(config).__name__}")
  mesh = parallel.make_mesh(options.devices)
  stats = fit_normalizer(data, options.normalize)
  num_train = int(data.train.size)
  dims = data.dims()
  stages = spec.stages(config, num_train)
  bounds = stage_bounds(stages)
  total = bounds[-1][1] if bounds else 0

  aug = augment_lib.parse(options.augment)
  if aug.active and not data.is_pixels:
    raise UserError(f"augment={options.augment!r} applies to pixel images; dataset {data.name!r} has image features")
  streamed = (data.is_pixels or not data.image_in_memory) if options.stream is None else options.stream

  state = init_state(spec, config, dims, num_train, seed=options.seed, num_seeds=options.num_seeds)
  if streamed and spec.needs_image_matrix:  # after init, which refuses pixels with a better message
    raise UserError(f"{spec.name} cannot stream images: it needs the whole training image matrix on the "
                    f"device ({spec.needs_image_matrix}); load the images into memory or train on features")
  best_score, best_epoch, best_state, history = -math.inf, None, None, []
  if store is not None and options.resume and store.has_latest():
    state, extra = store.restore_latest(state)
    best_score = extra.get("best_score", best_score)
    best_epoch = extra.get("best_epoch")
    history = extra.get("history", [])
    log(f"resumed {spec.name} from epoch {int(state.epoch)} of {total}")
  elif spec.warm_start is not None:
    state = state.replace(model=spec.warm_start(state.model, config))
  state = parallel.replicate(state, mesh)
  arrays = training_arrays(spec, data, stats, image=not streamed)
  arrays = parallel.replicate({k: jnp.asarray(v) for k, v in arrays.items()}, mesh)

  compiled = {}
  has_val = data.val.size > 0
  start_epoch = int(state.epoch)
  t0 = time.perf_counter()
  bar = _progress(total, start_epoch, spec.name, options.progress)
  try:
    for epoch in range(start_epoch, total):
      s = next(i for i, (a, b) in enumerate(bounds) if a <= epoch < b)
      stage, (first, end) = stages[s], bounds[s]
      last_of_stage = epoch + 1 == end
      if s not in compiled and streamed:
        compiled[s] = StreamedEpoch(stage, mesh, aug, take_rows(data.image, data.train),
                                    functools.partial(normalize, stats, "image"), options.prefetch)
      elif s not in compiled:
        compiled[s] = compile_epoch(stage, mesh, aug)
      state, logs = compiled[s](state, arrays)
      logs = {k: np.asarray(v) for k, v in logs.items()}  # each (seeds, steps)
      _check_finite(logs, stage.name, epoch + 1)
      if last_of_stage and stage.finish is not None:
        state = compile_finish(stage)(state, arrays)
      entry = {"epoch": epoch + 1, "stage": stage.name, **{k: float(v.mean()) for k, v in logs.items()}}
      due = options.eval_every and (epoch + 1 - first) % options.eval_every == 0
      if stage.evaluate and has_val and (due or last_of_stage):
        scores = [_mean_map(evaluate(spec, seed_slice(state.model, i), data, stats, queries="val", full=False))
                  for i in range(options.num_seeds)]
        entry["val_map"] = float(np.mean(scores))
        if entry["val_map"] > best_score:
          best_score, best_epoch = entry["val_map"], epoch + 1
          best_state = jax.device_get(state)
          if store is not None:
            store.save_best(state, stats, epoch + 1)
      history.append(entry)
      bar.set_postfix({k: f"{v:.4g}" for k, v in entry.items() if k not in ("epoch", "stage")}, refresh=False)
      bar.update(1)
      if store is not None and (due or last_of_stage):
        store.save_latest(state, stats, epoch + 1,
                          extra={"best_score": best_score, "best_epoch": best_epoch, "history": history})
  finally:
    bar.close()
    if store is not None:
      store.wait()
  train_time = time.perf_counter() - t0

  selected = "last"
  if best_epoch is not None:
    selected = f"best-val@{best_epoch}"
    if best_epoch != int(state.epoch):
      # after a resume the best state may predate this process: read it back from the store
      state = best_state if best_state is not None else store.restore_best(state)
  per_seed = [evaluate(spec, seed_slice(state.model, i), data, stats, top_k=options.top_k, pn=options.pn)
              for i in range(options.num_seeds)]
  return FitResult(state=state, final=average_over_seeds(per_seed), per_seed=per_seed, history=history,
                   selected=selected, train_time=train_time, normalizer=stats)


def _check_finite(logs: dict, stage: str, epoch: int) -> None:
  for name, values in logs.items():
    bad = ~np.isfinite(values)
    if bad.any():
      seed, step = np.argwhere(bad)[0]
      raise TrainingDiverged(f"non-finite {name.split('/', 1)[1]} in stage {stage!r}, phase "
                             f"{name.split('/')[0]!r}, epoch {epoch}, step {step + 1} (seed index {seed}); "
                             "the last good checkpoint is kept")


def _progress(total: int, start: int, name: str, enabled: bool):
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=start, desc=name, unit="epoch", disable=not enabled, dynamic_ncols=True)
