"""Flags that several commands share, defined once, and the settings they build.

`add_experiment_flags` declares the flags of one experiment (`jxhash train`, `jxhash sweep`);
`settings_from_args` turns parsed flags (over a `--config` file, if given) into
`jxhash.settings.Settings`. Dotted flags `--config.SECTION.FIELD=VALUE` set any field of the
settings tree; `--config.method.FIELD=VALUE` sets a field of the method's config (as `--set`).
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib

from jxhash import settings as settings_lib
from jxhash.cli import ArgumentParser, int_at_least
from jxhash.errors import UserError

EXAMPLES_NOTE = "Methods: {methods}. Datasets: {datasets}. Presets: default, smoke (every method), {presets}."


def choices_text() -> str:
  """The methods, datasets and presets, for --help epilogs."""
  from jxhash.data import LOADERS
  from jxhash.methods import METHODS
  presets = sorted({p for spec in METHODS.values() for p in spec.presets})
  return EXAMPLES_NOTE.format(methods=", ".join(METHODS), datasets=", ".join(LOADERS),
                              presets=", ".join(presets) + " (see docs/methods/)")


def parser(description: str, examples: list[str]) -> ArgumentParser:
  epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\n" + choices_text()
  return ArgumentParser(description=description, epilog=epilog + "\n")


def add_bits(p, default=None, help="code length (method default: 32)"):
  p.add_argument("--bits", type=int_at_least(1), default=default, help=help)


def add_seeds(p, default=1, help="model seeds trained at once (vmapped); results give mean ± std"):
  p.add_argument("--seeds", type=int_at_least(1), default=default, help=help)


def add_preset(p, help="a named setting: smoke (tiny, every method; its values win over --epochs, --batch-size "
                             "and --set unless those are smaller), paper, ... (docs/methods/)"):
  p.add_argument("--preset", default=None, help=help)


def add_workdir(p):
  p.add_argument("--workdir", default=".", help="root of every output: results/, checkpoints/, logs/ "
                                                "(default: the current directory)")


def add_data_flags(p):
  p.add_argument("--dataset", default=None, help="dataset loader name (default: synthetic)")
  p.add_argument("--data-dir", default=None, help="folder with the dataset's files")
  p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                 help="loader option, e.g. num_val=200 (repeatable; docs/data.md lists each dataset's)")
  p.add_argument("--split", default=None, choices=settings_lib.SPLIT_RULES, help="split rule (default: random)")
  p.add_argument("--split-seed", type=int_at_least(0), default=None, help="seed of the data split (default 0)")


def add_method_flags(p):
  p.add_argument("--config", default=None, help="a config file (configs/<dataset>/<name>.py); flags override it")
  p.add_argument("--method", default=None, help="registered method (default: dcmh)")
  add_preset(p)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                 help="method config field, e.g. --set lr=0.01 or --set image_hidden=64,32 (repeatable)")
  add_bits(p)
  p.add_argument("--epochs", type=int_at_least(1), default=None, help="override the method's epochs")
  p.add_argument("--batch-size", type=int_at_least(1), default=None, help="override the method's batch size")


def add_train_flags(p, *, seeds_default=None):
  p.add_argument("--seed", type=int_at_least(0), default=None, help="first model seed (init, batch order)")
  add_seeds(p, default=seeds_default)
  p.add_argument("--eval-every", type=int_at_least(0), default=None,
                 help="validate every N epochs (0: at stage ends; default 10)")
  p.add_argument("--normalize", default=None, choices=settings_lib.NORMALIZE,
                 help="input normalisation with training-split statistics (default: standardize)")


def add_experiment_flags(p):
  add_method_flags(p)
  add_data_flags(p)
  add_train_flags(p)
  p.add_argument("--stream", default=None, action=argparse.BooleanOptionalAction,
                 help="read image batches from the host each step (default: when the images are pixels)")
  p.add_argument("--prefetch", type=int_at_least(1), default=None, help="batches read ahead when streaming")
  p.add_argument("--augment", default=None, help="pixel augmentation: none, flip, shift:P or flip+shift:P")


def load_config_file(path) -> dict:
  """The dict a config file's `get_config()` returns (checked when it becomes settings)."""
  from jxhash import fileio
  path = fileio.require_readable_file(path, what="--config")
  spec = importlib.util.spec_from_file_location(f"jxhash_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - a config file is user code: any failure is its own
    raise UserError(f"--config {path}: cannot load it ({type(e).__name__}: {e})") from e
  if not callable(getattr(module, "get_config", None)):
    raise UserError(f"--config {path}: defines no get_config()")
  try:
    values = module.get_config()
  except Exception as e:  # noqa: BLE001
    raise UserError(f"--config {path}: cannot load it ({type(e).__name__}: {e})") from e
  if not isinstance(values, dict):
    raise UserError(f"--config {path}: get_config() must return a dict, got {type(values).__name__}")
  return values


def config_file_settings(path) -> settings_lib.Settings:
  """Settings of a config file. Its relative data dir is relative to the config file's folder
  when that path exists there, else to the current directory."""
  values = load_config_file(path)
  s = settings_lib.from_mapping(values, where=f"--config {path}")
  if s.data.dir is not None and not pathlib.Path(s.data.dir).expanduser().is_absolute():
    for base in _config_roots(pathlib.Path(path).resolve()):
      candidate = base / s.data.dir
      if candidate.exists():
        s = s.replace(data={"dir": str(candidate)})
        break
  return s


def _config_roots(path: pathlib.Path):
  """Folders a config file's relative paths may start from: the checkout holding configs/, then
  the current directory."""
  for parent in path.parents:
    if parent.name == "configs":
      yield parent.parent
      break
  yield pathlib.Path.cwd()


def split_dotted(argv: list[str]) -> tuple[list[str], list[str]]:
  """(`--config.a.b=v` items as "a.b=v", the other arguments)."""
  dotted, rest = [], []
  it = iter(argv)
  for arg in it:
    if arg.startswith("--config."):
      item = arg[len("--config."):]
      if "=" not in item:
        item = f"{item}={next(it, '')}"
      dotted.append(item)
    else:
      rest.append(arg)
  return dotted, rest


def settings_from_args(args, dotted=()) -> settings_lib.Settings:
  """Settings: a --config file (if any), then the flags given, then `--config.x.y=v` items."""
  s = config_file_settings(args.config) if getattr(args, "config", None) else settings_lib.Settings()
  flat = {}
  for key in ("method", "preset", "dataset", "data_dir", "split", "split_seed", "bits", "epochs", "batch_size",
              "seed", "seeds", "normalize", "eval_every", "stream", "prefetch", "augment", "name"):
    value = getattr(args, key, None)
    if value is not None:
      flat[key] = value
  s = settings_lib.from_mapping(flat, where="flags", base=s)
  # the command line beats the config file: --epochs 50 replaces the file's `set: {"epochs": 200}`
  sized = {key for key in ("bits", "epochs", "batch_size") if key in flat}
  if sized & set(s.method.set):
    s = s.replace(method={"set": {k: v for k, v in s.method.set.items() if k not in sized}})
  overrides = _pairs(getattr(args, "overrides", []), "--set", repeat=True)
  options = _pairs(getattr(args, "data_option", []), "--data-option", repeat=False)
  if overrides:
    s = s.replace(method={"set": {**s.method.set, **overrides}})
  if options:
    s = s.replace(data={"options": {**s.data.options, **options}})
  for item in dotted:
    s = settings_lib.parse_override(s, item)
  return s


def _pairs(items, flag: str, *, repeat: bool) -> dict:
  """{key: value text} of "key=value" items; with `repeat` a later item overrides an earlier one."""
  out = {}
  for item in items:
    key, sep, value = str(item).partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
      raise UserError(f"{flag} {item!r} is not key=value")
    if key in out and not repeat:
      raise UserError(f"{flag} {key} is given twice")
    out[key] = value
  return out
