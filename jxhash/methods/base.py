"""The method interface: a frozen config plus pure functions, collected in a `MethodSpec`.

A method never runs its own loop. It describes its training as stages of epochs, each epoch
a sequence of phases (one network's update, say) run over shuffled batches of the training
set, and the generic trainer (`jxhash.train`) runs them:

    for stage in spec.stages(config, num_train):
      for epoch in range(stage.epochs):
        for phase in stage.phases:
          for batch in shuffled batches of phase.batch_size:
            state, metrics = phase.step(state, batch, data, key)
        state = stage.end_of_epoch(state, data)         # e.g. B = sign(F + G)
      state = stage.finish(state, data)                 # e.g. proxies P = sign(P~)

`data` is a dict of the whole (normalised) training split on device: "image" (n, D),
"text" (n, T) and, for supervised methods only, "labels" (n, C). `batch` holds the same keys
for the batch rows plus "index" (bs,), their positions in the training split. When the
trainer streams images (pixel stacks on disk), `data` has no "image": a method whose steps
read it declares `needs_image_matrix`. Steps must be
pure and free of Python control flow on traced values: the trainer jit-compiles each epoch
as one program (a `lax.scan` over batches) and may `vmap` it over seeds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from jxhash.errors import UserError

# (state, batch, data, key) -> (state, {name: scalar})
StepFn = Callable[[Any, dict, dict, jax.Array], tuple[Any, dict]]
# (state, data) -> state
StateFn = Callable[[Any, dict], Any]


@dataclasses.dataclass(frozen=True)
class BaseConfig:
  """Fields every method's config has (the CLI's --bits, --epochs, --batch-size)."""

  bits: int = 32
  epochs: int = 500
  batch_size: int = 128


@dataclasses.dataclass(frozen=True)
class Phase:
  """One optimisation phase of an epoch.

  Attributes:
    name: used in logs and metric names ("image", "text", ...).
    step: the jittable update (see `StepFn`).
    batch_size: rows per step; an epoch runs num_train // batch_size steps over a fresh
      permutation (the remainder is dropped, at least one step).
  """

  name: str
  step: StepFn
  batch_size: int


@dataclasses.dataclass(frozen=True)
class Stage:
  """Epochs of the same phases. `evaluate=False` for pre-training (no codes to rank yet)."""

  name: str
  epochs: int
  phases: tuple[Phase, ...]
  end_of_epoch: StateFn | None = None
  finish: StateFn | None = None
  evaluate: bool = True


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: specs key compiled-function caches
class MethodSpec:
  """A registered method.

  Attributes:
    name: registry key.
    Config: frozen dataclass subclassing `BaseConfig`; defaults are the published values.
    init: (key, config, dims, num_train) -> state pytree; dims as `CrossModalData.dims()`.
    stages: (config, num_train) -> tuple of `Stage`.
    encode: (state, modality, x) -> (N, K) real codes; modality "image" or "text". Binary
      codes are `losses.binarize` of these.
    fidelity: one line on how much is the authors' algorithm and how much reconstruction.
    supervised: if False, the trainer never hands labels to the steps.
    reference: the paper.
    smoke: config overrides that make a tiny, fast configuration (small widths, few
      epochs); the registry-wide tests and quick examples use it.
    report: optional (one seed's state) -> dict of method-specific facts for the results
      file (e.g. DCPH's proxy distances).
    warm_start: optional (state with a leading seed axis, config) -> state: overwrite parts of
      a freshly initialised state with pretrained weights read from disk (DCMH's
      imagenet-vgg-f.mat). Called by the trainer outside jit, on new runs only (a resumed
      run's checkpoint already holds them), so the weights never become program constants.
    needs_image_matrix: why the steps read the whole training image matrix (`data["image"]`)
      rather than only the batch rows; non-empty means the images cannot be streamed.
  """

  name: str
  Config: type
  init: Callable[..., Any]
  stages: Callable[..., tuple[Stage, ...]]
  encode: Callable[[Any, str, jax.Array], jax.Array]
  fidelity: str
  reference: str
  supervised: bool = True
  smoke: dict = dataclasses.field(default_factory=dict)
  report: Callable[[Any], dict] | None = None
  warm_start: Callable[[Any, Any], Any] | None = None
  needs_image_matrix: str = ""


def check_modality(modality: str) -> None:
  if modality not in ("image", "text"):
    raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")


def require_features(method: str, dims: dict, what: str) -> None:
  """A UserError if the images are pixels: `method` trains on (N, D) image features (`what`)."""
  if len(dims["image_shape"]) != 1:
    raise UserError(f"{method} trains on image features ({what}), and this dataset has "
                    f"{'x'.join(map(str, dims['image_shape']))} pixels: extract features first "
                    "(jxhash.nets.CNNF(features_only=True), or image_features= with the loader) or use dcmh, "
                    "which trains CNN-F on pixels")


def steps_per_epoch(num_train: int, batch_size: int) -> int:
  """Steps an epoch of a phase runs (must agree with the trainer)."""
  return max(1, num_train // batch_size)


def epoch_schedule(kind: str, *, start: float, end: float, epochs: int, steps: int) -> optax.Schedule:
  """A learning rate that is constant within an epoch and moves between epochs.

  Args:
    kind: "linear" (start -> end linearly over the epochs; DCMH's TF/PyTorch code),
      "logspace" (geometric start -> end; DCMH's MATLAB code) or "constant".
    start, end: first and last epoch's rate.
    epochs: number of epochs.
    steps: optimizer updates per epoch.
  """
  if kind not in ("linear", "logspace", "constant"):
    raise ValueError(f"unknown lr schedule {kind!r}; choose linear, logspace or constant")
  epochs = max(epochs, 1)
  if kind == "linear":
    table = np.linspace(start, end, epochs)
  elif kind == "logspace":
    table = np.logspace(np.log10(start), np.log10(end), epochs)
  else:
    table = np.full(epochs, start)
  # a numpy constant, not a jax array: the schedule lives in TrainState.tx (static), and a
  # jax array created while init is being traced would leak as a tracer
  table = np.asarray(table, np.float32)

  def schedule(count):
    return jnp.asarray(table)[jnp.minimum(count // steps, epochs - 1)]

  return schedule


def freeze(tx: optax.GradientTransformation, names=("mean_image",)) -> optax.GradientTransformation:
  """`tx` for every parameter except those whose path contains one of `names`, which never
  change (not even by weight decay): constants that live in params so checkpoints carry them."""

  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if any(getattr(k, "key", None) in names for k in path) else "train", params)

  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def make_state(module, params, tx: optax.GradientTransformation) -> train_state.TrainState:
  """A flax TrainState for one network."""
  return train_state.TrainState.create(apply_fn=module.apply, params=params, tx=tx)


def sgd(learning_rate, *, weight_decay: float = 0.0, momentum: float | None = None):
  """SGD with optional L2 weight decay added to the gradient (as the MATLAB/PyTorch codes do)."""
  parts = []
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.sgd(learning_rate, momentum=momentum))
  return optax.chain(*parts)


def apply_gradients(state: train_state.TrainState, loss_fn, *args):
  """value_and_grad of loss_fn(params, *args) -> (loss, aux); returns (new_state, loss, aux)."""
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, *args)
  return state.apply_gradients(grads=grads), loss, aux
