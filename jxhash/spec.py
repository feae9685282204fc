"""The method contract: what a method hands the trainer, and nothing else.

Both sides import this module and nothing of each other: a method (`jxhash/methods/*.py`)
builds a `MethodSpec`; the trainer (`jxhash.training`), the checkpoint store and the CLI only
call the functions it carries. A method never runs its own loop. It describes its training as
stages of epochs, each epoch a sequence of phases (one network's update, say) run over
shuffled batches of the training set, and the generic trainer runs them:

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
read it declares `needs_image_matrix` (per config if need be). Steps must be pure and free of Python control flow on
traced values: the trainer jit-compiles each epoch as one program (a `lax.scan` over batches)
and may `vmap` it over seeds.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Callable, Protocol

import jax

from jxhash.errors import UserError


@dataclasses.dataclass(frozen=True)
class Dims:
  """The input sizes a method builds its networks for.

  Attributes:
    image_shape: (D,) for features, (H, W, 3) for pixels.
    text_dim: T (with token ids, their length L).
    num_labels: C.
    text_tokens: the text is CLIP token ids (int32), not features (`CrossModalData.text_kind`).
  """

  image_shape: tuple
  text_dim: int
  num_labels: int
  text_tokens: bool = False

  @property
  def is_pixels(self) -> bool:
    return len(self.image_shape) == 3

  @property
  def image_dim(self) -> int:
    """D for image features (pixels have no single width)."""
    return int(self.image_shape[0])

  def width(self, modality: str) -> tuple:
    """The per-item input shape of "image" or "text"."""
    return tuple(self.image_shape) if modality == "image" else (self.text_dim,)

  def to_json(self) -> dict:
    out = {"image_shape": list(self.image_shape), "text_dim": int(self.text_dim), "num_labels": int(self.num_labels)}
    if self.text_tokens:  # only then: the identities of runs on text features stay as they were
      out["text_tokens"] = True
    return out

  @classmethod
  def from_json(cls, values: dict) -> "Dims":
    return cls(image_shape=tuple(int(v) for v in values["image_shape"]), text_dim=int(values["text_dim"]),
               num_labels=int(values["num_labels"]), text_tokens=bool(values.get("text_tokens", False)))

  @classmethod
  def of(cls, data) -> "Dims":
    """The dims of a `jxhash.data.CrossModalData`."""
    return cls(image_shape=tuple(int(v) for v in data.image.shape[1:]), text_dim=int(data.text.shape[1]),
               num_labels=int(data.labels.shape[1]), text_tokens=bool(getattr(data, "text_tokens", False)))


class InitFn(Protocol):
  def __call__(self, key: jax.Array, config: Any, dims: Dims, num_train: int) -> Any:
    """A fresh method state (one seed) for `num_train` training items."""


class StepFn(Protocol):
  def __call__(self, state: Any, batch: dict, data: dict, key: jax.Array) -> tuple[Any, dict]:
    """One update: (new state, {name: scalar} logged values)."""


class StateFn(Protocol):
  def __call__(self, state: Any, data: dict) -> Any:
    """A state -> state transition between steps (end of epoch, end of stage)."""


class StagesFn(Protocol):
  def __call__(self, config: Any, num_train: int) -> tuple["Stage", ...]:
    """The training schedule."""


class EncodeFn(Protocol):
  def __call__(self, state: Any, modality: str, x: jax.Array) -> jax.Array:
    """(N, K) real codes of inputs `x` of `modality` ("image" or "text")."""


class ReportFn(Protocol):
  def __call__(self, state: Any) -> dict:
    """Method-specific facts about one seed's trained state, for the results file."""


class WarmStartFn(Protocol):
  def __call__(self, state: Any, config: Any) -> Any:
    """Overwrite parts of a fresh state (leading seed axis) with pretrained weights."""


class PrepareFn(Protocol):
  def __call__(self, state: Any, config: Any, dims: "Dims", rows: Callable) -> Any:
    """Fill in what the steps read of every training item and never train (leading seed axis).

    `rows(modality, chunk)` iterates over the normalised training split of "image" or "text" in
    order, as numpy arrays of at most `chunk` rows, whether or not the trainer streams images.
    """


@dataclasses.dataclass(frozen=True)
class BaseConfig:
  """Fields every method's config has (the CLI's --bits, --epochs, --batch-size), and the checks
  every config gets at construction, so a bad value is refused before any work starts.

  Checks, by the type of each field's default (`check_config`):
    bool: a bool. int: an int (not a bool), >= 1 if the default is >= 1, else >= 0.
    float: a finite number >= 0. str: one of `CHOICES[field]` when listed there.
    tuple: items of the default's item type; int items >= 1 (widths); a field in `ORDERS`
      names each of its values exactly once (e.g. `phase_order`).
  `RANGES` overrides the lower bounds: {field: (minimum, "why")}. A method adds its own choices
  in its Config's `CHOICES` (merged with the base ones) and cross-field checks in `check()`.
  """

  bits: int = 32
  epochs: int = 500
  batch_size: int = 128

  # field -> valid values, for string fields of any method that has them
  CHOICES: typing.ClassVar[dict] = {
      "init": ("normal0.01", "fan_in"),
      "lr_schedule": ("linear", "logspace", "constant"),
      "buffer_init": ("normal", "zeros"),
      "cnn_dtype": ("float32", "bfloat16"),
      "lr_scaling": ("none", "fan_in"),
  }
  # field -> the values it must order (each exactly once)
  ORDERS: typing.ClassVar[dict] = {"phase_order": ("image", "text")}
  # field -> (minimum, reason) where the type's default bound does not apply
  RANGES: typing.ClassVar[dict] = {}

  def __post_init__(self):
    check_config(self)
    self.check()

  def check(self) -> None:
    """Cross-field checks of a method's config; raise `UserError` naming the fields."""


@dataclasses.dataclass(frozen=True)
class Phase:
  """One optimisation phase of an epoch.

  Attributes:
    name: used in logs and metric names ("image", "text", ...).
    step: the jittable update.
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
    Config: frozen dataclass subclassing `BaseConfig`; defaults documented per field.
    init: (key, config, dims, num_train) -> state pytree.
    stages: (config, num_train) -> tuple of `Stage`.
    encode: (state, modality, x) -> (N, K) real codes; binary codes are `codes.binarize` of these.
    fidelity: one line on how much is the authors' algorithm and how much reconstruction.
    reference: the paper.
    supervised: if False, the trainer never hands labels to the steps.
    smoke: config overrides that make a tiny, fast configuration (small widths, few
      epochs); the registry-wide tests and quick examples use it.
    report: optional (one seed's state) -> dict of method-specific facts for the results file.
    warm_start: optional (state with a leading seed axis, config) -> state: overwrite parts of
      a freshly initialised state with pretrained weights read from disk (DCMH's
      imagenet-vgg-f.mat). Called by the trainer outside jit, on new runs only (a resumed
      run's checkpoint already holds them), so the weights never become program constants.
    prepare: optional (state with a leading seed axis, config, dims, rows) -> state: a pass over
      the training set before the first epoch, outside jit, on new runs only and after
      `warm_start` (UCHM's fixed backbone features of every training image); `rows` reads the
      training split chunk by chunk (`PrepareFn`), so it works on streamed pixels too. What it
      computes lives in the state, so checkpoints carry it and a resumed run never redoes it.
    needs_image_matrix: why the steps read the whole training image matrix (`data["image"]`)
      rather than only the batch rows; non-empty means the images cannot be streamed. A
      function (config, dims) -> reason or "" when only some configs or inputs read it (dims
      may be None: then the reason for image features); the trainer asks
      `image_matrix_need(config, dims)`.
    presets: named config settings, {name: {field: value}}, applied over the defaults (e.g.
      "paper": the published settings where jxhash's defaults differ from them).
  """

  name: str
  Config: type
  init: InitFn
  stages: StagesFn
  encode: EncodeFn
  fidelity: str
  reference: str
  supervised: bool = True
  smoke: dict = dataclasses.field(default_factory=dict)
  report: ReportFn | None = None
  warm_start: WarmStartFn | None = None
  prepare: PrepareFn | None = None
  needs_image_matrix: str | Callable[[Any, Any], str] = ""
  presets: dict = dataclasses.field(default_factory=dict)

  def image_matrix_need(self, config, dims: Dims | None = None) -> str:
    """Why `config`'s steps read the whole training image matrix on inputs of `dims` (None:
    image features); "" when they stream."""
    need = self.needs_image_matrix
    return need(config, dims) if callable(need) else need


MODALITIES = ("image", "text")


def steps_per_epoch(num_train: int, batch_size: int) -> int:
  """Steps an epoch of a phase runs (the trainer's rule: at least one, remainder dropped)."""
  return max(1, num_train // min(batch_size, num_train))


def _merged(config, attribute: str) -> dict:
  out = {}
  for cls in reversed(type(config).__mro__):
    out.update(cls.__dict__.get(attribute, {}))
  return out


def check_config(config) -> None:
  """The type, range and choice checks of `BaseConfig` (see its docstring); raises `UserError`."""
  name = f"{type(config).__module__.rsplit('.', 1)[-1]} config"
  choices, orders, ranges = (_merged(config, a) for a in ("CHOICES", "ORDERS", "RANGES"))
  defaults = {f.name: f.default for f in dataclasses.fields(config)}
  for field, default in defaults.items():
    value = getattr(config, field)
    where = f"{name}: {field}={value!r}"
    if isinstance(default, bool):
      if not isinstance(value, bool):
        raise UserError(f"{where}: expected true or false")
    elif isinstance(default, int):
      low = ranges.get(field, (1 if default >= 1 else 0,))[0]
      if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where}: expected an integer")
      if value < low:
        raise UserError(f"{where}: must be >= {low}")
    elif isinstance(default, float):
      low = ranges.get(field, (0.0,))[0]
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: expected a finite number")
      if value < low:
        raise UserError(f"{where}: must be >= {low:g}")
    elif isinstance(default, str):
      if not isinstance(value, str):
        raise UserError(f"{where}: expected a string")
      if field in choices and value not in choices[field]:
        raise UserError(f"{where}: choose one of {', '.join(map(repr, choices[field]))}")
    elif isinstance(default, tuple):
      if not isinstance(value, tuple):
        raise UserError(f"{where}: expected a tuple (on the command line: comma-separated, e.g. 64,32)")
      if field in orders:
        if sorted(value) != sorted(orders[field]):
          raise UserError(f"{where}: must name each of {', '.join(orders[field])} exactly once")
        continue
      kind = type(default[0]) if default else None
      for item in value:
        if kind is int and (isinstance(item, bool) or not isinstance(item, int) or item < 1):
          raise UserError(f"{where}: every item must be an integer >= 1")
        if kind is float and (isinstance(item, bool) or not isinstance(item, (int, float))
                              or not math.isfinite(item) or item < 0):
          raise UserError(f"{where}: every item must be a finite number >= 0")
