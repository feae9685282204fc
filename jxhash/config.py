"""Config overrides from the command line: `--set key=value` onto a frozen dataclass."""

from __future__ import annotations

import dataclasses
import typing

from jxhash.errors import UserError


def parse_value(text: str, default, field: str):
  """Parse `text` to the type of the field's default value.

  bool: true/false/1/0/yes/no; tuple: comma-separated items parsed like the default's items
  (empty string: empty tuple); int, float, str as written.
  """
  try:
    if isinstance(default, bool):
      low = text.strip().lower()
      if low not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(text)
      return low in ("true", "1", "yes")
    if isinstance(default, int):
      return int(text)
    if isinstance(default, float):
      return float(text)
    if isinstance(default, tuple):
      items = [t.strip() for t in text.split(",") if t.strip()]
      kind = type(default[0]) if default else str
      return tuple(parse_value(t, kind(), field) if kind is not str else t for t in items)
    if default is None or isinstance(default, str):
      return text
  except ValueError:
    pass
  raise UserError(f"--set {field}={text!r}: expected a {type(default).__name__} like {default!r}")


def apply_overrides(config, overrides: typing.Iterable[str]):
  """A copy of `config` with each "key=value" applied; unknown keys list the valid ones."""
  fields = {f.name: f for f in dataclasses.fields(config)}
  changes = {}
  for item in overrides:
    if "=" not in item:
      raise UserError(f"--set expects key=value, got {item!r}")
    key, value = item.split("=", 1)
    key = key.strip().replace("-", "_")
    if key not in fields:
      raise UserError(f"--set {key}: no such field in {type(config).__name__}; valid: {', '.join(sorted(fields))}")
    changes[key] = parse_value(value, getattr(config, key), key)
  return dataclasses.replace(config, **changes)


def check_positive(config, names=("bits", "epochs", "batch_size")):
  """Raise UserError for a non-positive size field."""
  for name in names:
    value = getattr(config, name, None)
    if value is not None and value <= 0:
      raise UserError(f"{name} must be positive, got {value}")
