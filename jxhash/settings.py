"""One experiment's settings: a nested, frozen config tree, checked once at construction.

    Settings(data=DataSettings(...), method=MethodSettings(...), train=TrainSettings(...),
             eval=EvalSettings(...), output=OutputSettings(...))

Every source of a value goes through the same two steps: strings (command-line flags, dotted
overrides such as `method.lr=30`) are parsed to the type of the field they set
(`jxhash.config.parse_value`, the one parser), and every section checks its values in
`__post_init__` (types, ranges, choices), so a config file's `seed: -5` fails exactly as
`--seed -5` does, before any data is read. The method's own fields (`method.set`) are checked
by the method's Config when `method_config` builds it.

Why frozen dataclasses rather than `ml_collections.ConfigDict`: the method configs already are
frozen dataclasses with construction-time checks (`jxhash.spec.BaseConfig`); one mechanism for
both keeps one validation path, typed fields and no new dependency. Config files
(`configs/<dataset>/<name>.py`) return a plain dict, nested by section or flat in the
command-line names (`from_mapping`).
"""

from __future__ import annotations

import dataclasses
import pathlib
import typing

from jxhash import config as config_lib
from jxhash.errors import UserError

NORMALIZE = ("standardize", "center", "none")
SPLIT_RULES = ("random", "dcmh")


def _int(value, where: str, low: int = 0) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise UserError(f"{where}: expected an integer, got {value!r}")
  if value < low:
    raise UserError(f"{where}: must be >= {low}, got {value}")
  return value


def _opt_int(value, where: str, low: int = 1):
  return None if value is None else _int(value, where, low)


def _str(value, where: str, choices=None, optional: bool = False):
  if value is None and optional:
    return None
  if not isinstance(value, str):
    raise UserError(f"{where}: expected a string, got {value!r}")
  if choices is not None and value not in choices:
    raise UserError(f"{where}: {value!r} is not one of {', '.join(choices)}")
  return value


def _bool(value, where: str, optional: bool = False):
  if value is None and optional:
    return None
  if not isinstance(value, bool):
    raise UserError(f"{where}: expected true or false, got {value!r}")
  return value


def _mapping(value, where: str) -> dict:
  if not isinstance(value, typing.Mapping):
    raise UserError(f"{where}: expected a mapping of key: value, got {type(value).__name__} {value!r}"[:200])
  for key in value:
    if not isinstance(key, str):
      raise UserError(f"{where}: keys must be strings, got {key!r}")
  return dict(value)


def _path(value, where: str, optional: bool = True):
  if value is None and optional:
    return None
  if isinstance(value, pathlib.PurePath):
    value = str(value)
  if not isinstance(value, str) or not value.strip() or "\0" in value:
    raise UserError(f"{where}: expected a path, got {value!r}")
  return value


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """Which data, split how (`jxhash.data.load(name, dir, split=, seed=, **options)`)."""

  name: str = "synthetic"
  dir: str | None = None
  options: dict = dataclasses.field(default_factory=dict)
  split: str = "random"
  split_seed: int = 0

  def __post_init__(self):
    _str(self.name, "data.name")
    _path(self.dir, "data.dir")
    _mapping(self.options, "data.options")
    _str(self.split, "data.split", SPLIT_RULES)
    _int(self.split_seed, "data.split_seed")


@dataclasses.dataclass(frozen=True)
class MethodSettings:
  """The method, its preset and the fields set over it (`method_config` builds its Config)."""

  name: str = "dcmh"
  preset: str | None = None
  set: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    _str(self.name, "method.name")
    _str(self.preset, "method.preset", optional=True)
    _mapping(self.set, "method.set")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """Trainer settings no method owns; bits/epochs/batch_size set the method's fields of those names."""

  bits: int | None = None
  epochs: int | None = None
  batch_size: int | None = None
  seed: int = 0
  seeds: int = 1
  normalize: str = "standardize"
  stream: bool | None = None
  prefetch: int = 2
  augment: str = "none"

  def __post_init__(self):
    for name in ("bits", "epochs", "batch_size"):
      _opt_int(getattr(self, name), f"train.{name}")
    _int(self.seed, "train.seed")
    _int(self.seeds, "train.seeds", 1)
    _str(self.normalize, "train.normalize", NORMALIZE)
    _bool(self.stream, "train.stream", optional=True)
    _int(self.prefetch, "train.prefetch", 1)
    _str(self.augment, "train.augment")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """Validation during training (model selection on the val split, never the queries), and the
  cut-offs of the final evaluation: mAP@k for each k in `top_k` (besides mAP@all; the CLIP
  lineage reports mAP@5000) and P@N for each N in `pn`."""

  eval_every: int = 10
  top_k: tuple = (100, 1000)
  pn: tuple = (1, 5, 10, 20, 50, 100, 200, 500, 1000)

  def __post_init__(self):
    _int(self.eval_every, "eval.eval_every")
    for name in ("top_k", "pn"):
      values = getattr(self, name)
      if not isinstance(values, (tuple, list)):
        raise UserError(f"eval.{name}: expected a list of integers, got {values!r}")
      for v in values:
        _int(v, f"eval.{name}", 1)
      object.__setattr__(self, name, tuple(values))


@dataclasses.dataclass(frozen=True)
class OutputSettings:
  """Where a run writes, and what it may replace.

  Attributes:
    workdir: root of every output (default: the current directory): results/<name>.json and
      checkpoints/<name>/ under it unless `out` / `checkpoint_dir` say otherwise.
    name: the run's name (default: from its identity, `jxhash.runs.identity.run_name`).
    checkpoint: write orbax checkpoints (a run with them resumes by itself after a kill).
    restart: train from scratch even where this run's checkpoints exist.
    overwrite: replace the results and checkpoints of another run, or of this run once complete.
    tensorboard: write TensorBoard logs (losses and val mAP per epoch, the settings) under
      <workdir>/logs/<name>/.
  """

  workdir: str = "."
  name: str | None = None
  out: str | None = None
  checkpoint_dir: str | None = None
  checkpoint: bool = True
  progress: bool = True
  restart: bool = False
  overwrite: bool = False
  tensorboard: bool = True

  def __post_init__(self):
    _path(self.workdir, "output.workdir", optional=False)
    if self.name is not None:
      from jxhash.runs.identity import check_run_name
      check_run_name(_str(self.name, "output.name"))
    _path(self.out, "output.out")
    _path(self.checkpoint_dir, "output.checkpoint_dir")
    for name in ("checkpoint", "progress", "restart", "overwrite", "tensorboard"):
      _bool(getattr(self, name), f"output.{name}")


SECTIONS = {"data": DataSettings, "method": MethodSettings, "train": TrainSettings, "eval": EvalSettings,
            "output": OutputSettings}


@dataclasses.dataclass(frozen=True)
class Settings:
  """An experiment: data, method, train, eval and output sections (module docstring)."""

  data: DataSettings = dataclasses.field(default_factory=DataSettings)
  method: MethodSettings = dataclasses.field(default_factory=MethodSettings)
  train: TrainSettings = dataclasses.field(default_factory=TrainSettings)
  eval: EvalSettings = dataclasses.field(default_factory=EvalSettings)
  output: OutputSettings = dataclasses.field(default_factory=OutputSettings)

  def __post_init__(self):
    for name, cls in SECTIONS.items():
      if not isinstance(getattr(self, name), cls):
        raise UserError(f"{name}: expected a {cls.__name__}, got {type(getattr(self, name)).__name__}")

  def replace(self, **sections) -> "Settings":
    """A copy with fields of sections replaced: `s.replace(train={"seeds": 5})`."""
    changes = {}
    for name, values in sections.items():
      if name not in SECTIONS:
        raise UserError(f"no settings section {name!r}; sections: {', '.join(SECTIONS)}")
      changes[name] = _replace(getattr(self, name), name, _mapping(values, name))
    return dataclasses.replace(self, **changes)

  def to_json(self) -> dict:
    from jxhash.fileio import to_json
    return to_json(dataclasses.asdict(self))


def _replace(section, name: str, values: dict):
  fields = {f.name for f in dataclasses.fields(section)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise UserError(f"{name}.{unknown[0]}: no such setting; {name} has {', '.join(sorted(fields))}")
  return dataclasses.replace(section, **values)


# flat command-line names (and the keys of flat config files) -> (section, field)
FLAT = {
    "method": ("method", "name"), "preset": ("method", "preset"), "set": ("method", "set"),
    "dataset": ("data", "name"), "data_dir": ("data", "dir"), "data_options": ("data", "options"),
    "split": ("data", "split"), "split_seed": ("data", "split_seed"),
    "bits": ("train", "bits"), "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"),
    "seed": ("train", "seed"), "seeds": ("train", "seeds"), "normalize": ("train", "normalize"),
    "stream": ("train", "stream"), "prefetch": ("train", "prefetch"), "augment": ("train", "augment"),
    "eval_every": ("eval", "eval_every"), "top_k": ("eval", "top_k"), "name": ("output", "name"),
}


def from_mapping(values, *, where: str = "config", base: Settings | None = None) -> Settings:
  """Settings from a dict: nested by section ({"method": {"name": ..., "set": {...}}}), or flat
  in the command-line names ({"method": "dcmh", "set": {...}}, `FLAT`), or both; over `base`."""
  values = _mapping(values, where)
  sections: dict[str, dict] = {}
  for key, value in values.items():
    if key in SECTIONS and isinstance(value, typing.Mapping):
      sections.setdefault(key, {}).update(_mapping(value, f"{where}: {key}"))
    elif key in FLAT:
      section, field = FLAT[key]
      sections.setdefault(section, {})[field] = value
    else:
      valid = sorted({*FLAT, *SECTIONS})
      raise UserError(f"{where}: unknown key {key!r}; valid: {', '.join(valid)}")
  try:
    return (base or Settings()).replace(**sections)
  except UserError as e:
    raise UserError(f"{where}: {e}") from None


def parse_override(settings: Settings, item: str) -> Settings:
  """`settings` with one "section.field=value" string applied (`method.lr=30` sets a method field)."""
  if "=" not in item:
    raise UserError(f"--config.{item}: expected section.field=value")
  key, text = item.split("=", 1)
  parts = key.strip().replace("-", "_").split(".")
  if len(parts) != 2 or parts[0] not in SECTIONS:
    raise UserError(f"--config.{key}: expected section.field with a section among {', '.join(SECTIONS)}")
  section, field = parts
  if section == "method" and field not in ("name", "preset"):
    return settings.replace(method={"set": {**settings.method.set, field: text}})
  if section == "data" and field not in {f.name for f in dataclasses.fields(DataSettings)}:
    return settings.replace(data={"options": {**settings.data.options, field: text}})
  current = getattr(settings, section)
  if field not in {f.name for f in dataclasses.fields(current)}:
    names = ", ".join(f.name for f in dataclasses.fields(current))
    raise UserError(f"--config.{key}: no such setting; {section} has {names}")
  return settings.replace(**{section: {field: parse_flag(text, current, field, f"--config.{key}")}})


def parse_flag(text: str, section, field: str, where: str):
  """`text` parsed to the type of `section.field` (its default, else its annotation)."""
  default = getattr(type(section)(), field)
  hint = {f.name: f.type for f in dataclasses.fields(section)}[field]
  if text.strip().lower() in ("none", "null") and "None" in str(hint):
    return None
  if default is None:
    default = 0 if "int" in str(hint) else False if "bool" in str(hint) else ""
  try:
    return config_lib.parse_value(text, default, field)
  except UserError:
    raise UserError(f"{where}={text!r}: expected {type(default).__name__}") from None


def method_config(spec, settings: Settings):
  """The method's Config: its defaults, then the preset, then train.bits/epochs/batch_size, then
  method.set (string values parsed by the field's type; others checked by the Config itself).

  The `smoke` preset is applied last instead, over train.epochs/batch_size and method.set: it
  exists to make any run tiny (a config file's tuned epochs included), so that every command
  can be checked quickly with `--preset smoke` appended. It never makes a run larger: an integer
  field the run already sets lower (`--batch-size 8` on a 9-item split) keeps the run's value."""
  config = config_lib.apply_preset(spec, settings.method.preset)
  t = settings.train
  sized = {k: v for k, v in (("bits", t.bits), ("epochs", t.epochs), ("batch_size", t.batch_size)) if v is not None}
  config = config_lib.apply_values(config, {**sized, **settings.method.set})
  if settings.method.preset == config_lib.SMOKE:
    smoke = {k: min(v, getattr(config, k)) if _is_int(v) and _is_int(getattr(config, k)) else v
             for k, v in config_lib.presets(spec)[config_lib.SMOKE].items()}
    config = config_lib.apply_values(config, smoke)
  return config


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)
