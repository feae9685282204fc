"""Config overrides from the command line: `--set key=value` onto a frozen method config.

Values are parsed by the type of the field's default: bool (true/false/1/0/yes/no), int, float,
str, and tuples written comma-separated (`64,32`, `64`, or Python-style `(64,)`; an empty
value or `()` is the empty tuple). The config's own checks (`jxhash.spec.BaseConfig`) then
reject out-of-range values, all before any data is loaded.
"""

from __future__ import annotations

import dataclasses
import typing

from jxhash.errors import UserError

_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _syntax(default) -> str:
  if isinstance(default, bool):
    return "true or false"
  if isinstance(default, tuple):
    example = ",".join(str(v) for v in default) if default and not isinstance(default[0], tuple) else "64,32"
    return f"comma-separated values, e.g. {example or '64,32'} (one value: 64 or (64,))"
  return f"a {type(default).__name__}, e.g. {default!r}"


def flag_text(value) -> str:
  """A value as the command line writes it: tuples comma-separated, bools lower-case."""
  if isinstance(value, (list, tuple)):
    return ",".join(flag_text(v) for v in value)
  return str(value).lower() if isinstance(value, bool) else str(value)


def parse_value(text: str, default, field: str):
  """`text` parsed to the type of the field's default value (module docstring); UserError if not."""
  try:
    if isinstance(default, bool):
      return _BOOLS[text.strip().lower()]
    if isinstance(default, int):
      return int(text)
    if isinstance(default, float):
      return float(text)
    if isinstance(default, tuple):
      body = text.strip()
      if body.startswith("(") and body.endswith(")"):
        body = body[1:-1]
      items = [t.strip() for t in body.split(",") if t.strip()]
      kind = type(default[0]) if default else str
      if kind is tuple:
        raise ValueError("nested tuples are set in a config file, not with --set")
      return tuple(parse_value(t, kind(), field) if kind is not str else t for t in items)
    if default is None or isinstance(default, str):
      return text
  except (ValueError, KeyError, UserError):
    pass
  raise UserError(f"--set {field}={text!r}: expected {_syntax(default)}")


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
      raise UserError(f"--set {key}: no such field in {type(config).__module__.rsplit('.', 1)[-1]}'s config; "
                      f"valid: {', '.join(sorted(fields))}")
    changes[key] = parse_value(value, getattr(config, key), key)
  return dataclasses.replace(config, **changes)


def apply_values(config, values: dict):
  """A copy of `config` with `values` ({field: value}) applied: strings are parsed by the field's
  type (`parse_value`), lists become tuples, and the Config's own checks judge the rest."""
  fields = {f.name for f in dataclasses.fields(config)}
  changes = {}
  for key, value in values.items():
    key = str(key).strip().replace("-", "_")
    if key not in fields:
      raise UserError(f"--set {key}: no such field in {type(config).__module__.rsplit('.', 1)[-1]}'s config; "
                      f"valid: {', '.join(sorted(fields))}")
    default = getattr(config, key)
    if isinstance(value, str) and not isinstance(default, str) and default is not None:
      value = parse_value(value, default, key)
    elif isinstance(value, list):
      value = tuple(value)
    changes[key] = value
  try:
    return dataclasses.replace(config, **changes)
  except TypeError as e:  # a config check comparing a value of the wrong type
    raise UserError(f"--set: a value has the wrong type ({e})") from None


SMOKE = "smoke"  # the preset every method has: tiny and fast (`spec.smoke`)


def presets(spec) -> dict:
  """{name: {field: value}}: the method's presets, plus `smoke` (tiny and fast, for every method)."""
  return {**spec.presets, SMOKE: dict(spec.smoke)}


def apply_preset(spec, name: str | None):
  """`spec.Config()` with the named preset's values (`presets`); None or "default": the defaults."""
  if name is None or name == "default":
    return spec.Config()
  available = presets(spec)
  if name not in available:
    valid = ", ".join(["default", *sorted(available)])
    raise UserError(f"--preset {name!r}: {spec.name} has the presets {valid}")
  return dataclasses.replace(spec.Config(), **available[name])
