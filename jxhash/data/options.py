"""Loader options: a declarative schema per dataset, checked on every load.

Each loader declares its options as a `Schema` of `Option`s: a type, a default, the allowed
range or choices, and a one-line doc. The loader calls `Schema.check(options)`, which refuses
unknown keys (listing the valid ones), wrong types (an int is never silently a float or a
bool) and values out of range, and fills in the defaults; so `jxhash.data.load(name, ...,
**options)` and a direct call of the loader are checked alike. `Schema.parse(["key=value",
...])` turns command-line strings into typed values by the same schema (`--data-option`):

  int     digits with an optional sign ("50x", "1e3" and "2.0" are refused)
  float   any finite number
  bool    true/false, 1/0, yes/no (any case)
  str     as written; path: a file, "path" or "path:key"
  tuple   comma-separated items of the item type
  none    "none" (or nothing) for options whose default is None

Every problem is a `DataError` (a `UserError`: one line, exit code 2 on the command line) that
names the dataset, the option and what is valid. `markdown()` renders the tables of
docs/data.md, which a test keeps in sync with the schemas.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from typing import Any, Iterable, Mapping

import numpy as np

from jxhash.errors import DataError

KINDS = ("int", "float", "bool", "str", "path", "tuple")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
# Set by jxhash.data.load itself, never as a loader option.
RESERVED = {"split": "split=", "seed": "seed= (the split seed; --split-seed on the command line)"}


@dataclasses.dataclass(frozen=True)
class Option:
  """One loader option.

  Attributes:
    name: the keyword.
    kind: one of KINDS.
    default: the value when not given.
    doc: one line saying what it does.
    low, high: inclusive bounds for int / float values (None: unbounded).
    choices: the allowed values, if only a few are.
    optional: None is a valid value (the default rule applies, e.g. "every other item").
    item: the kind of a tuple's items.
  """

  name: str
  kind: str
  default: Any
  doc: str
  low: float | None = None
  high: float | None = None
  choices: tuple | None = None
  optional: bool = False
  item: str = "int"

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")

  def describe(self) -> str:
    """What is valid, e.g. "int >= 1", "one of 'auto', 'pixels'", "path or none"."""
    if self.choices is not None:
      text = "one of " + ", ".join(repr(c) for c in self.choices)
    else:
      text = {"tuple": f"comma-separated {self.item}s", "path": "path"}.get(self.kind, self.kind)
      if self.low is not None and self.high is not None:
        text += f" in [{self.low}, {self.high}]"
      elif self.low is not None:
        text += f" >= {self.low}"
      elif self.high is not None:
        text += f" <= {self.high}"
    return text + (" or none" if self.optional else "")

  def _error(self, dataset: str, value, problem: str) -> DataError:
    return DataError(f"dataset {dataset!r}: option {self.name}={value!r} {problem}; {self.name} is "
                     f"{self.describe()}, default {self.default!r} ({self.doc})")

  def check(self, value, dataset: str):
    """`value` (a Python value) validated and normalised (numpy scalars to Python, paths to str)."""
    if value is None:
      if self.optional:
        return None
      raise self._error(dataset, value, "is not allowed")
    if self.kind == "tuple":
      if not isinstance(value, (tuple, list)):
        raise self._error(dataset, value, f"is not a tuple of {self.item}s")
      item = dataclasses.replace(self, kind=self.item, optional=False, choices=None)
      return tuple(item._check_one(v, dataset, shown=value) for v in value)
    value = self._check_one(value, dataset, shown=value)
    if self.choices is not None and value not in self.choices:
      raise self._error(dataset, value, "is not a valid choice")
    return value

  def _check_one(self, value, dataset: str, *, shown):
    kind = self.kind
    if kind == "bool":
      if not isinstance(value, (bool, np.bool_)):
        raise self._error(dataset, shown, "is not a bool")
      return bool(value)
    if kind in ("int", "float"):
      if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer) if kind == "int"
                                                             else (int, float, np.integer, np.floating)):
        raise self._error(dataset, shown, f"is not {'an integer' if kind == 'int' else 'a number'}")
      value = int(value) if kind == "int" else float(value)
      if kind == "float" and not math.isfinite(value):
        raise self._error(dataset, shown, "is not finite")
      if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
        raise self._error(dataset, shown, "is out of range")
      return value
    if kind == "path":
      if not isinstance(value, (str, os.PathLike)):
        raise self._error(dataset, shown, "is not a path")
      value = os.fspath(value)
    elif not isinstance(value, str):
      raise self._error(dataset, shown, "is not a string")
    if not value:
      raise self._error(dataset, shown, "is empty")
    return value

  def parse(self, text: str, dataset: str):
    """A command-line string parsed by this option's kind, then `check`ed."""
    stripped = text.strip()
    if self.optional and stripped.lower() in ("", "none", "null"):
      return None
    if self.kind == "tuple":
      items = [t.strip() for t in stripped.split(",")] if stripped else []
      item = dataclasses.replace(self, kind=self.item, optional=False, choices=None)
      return self.check(tuple(item._parse_one(t, dataset, shown=text) for t in items), dataset)
    return self.check(self._parse_one(stripped if self.kind != "str" and self.kind != "path" else text,
                                      dataset, shown=text), dataset)

  def _parse_one(self, text: str, dataset: str, *, shown):
    if self.kind == "int":
      if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise self._error(dataset, shown, "is not an integer")
      return int(text)
    if self.kind == "float":
      try:
        return float(text)
      except ValueError:
        raise self._error(dataset, shown, "is not a number") from None
    if self.kind == "bool":
      low = text.lower()
      if low not in _TRUE + _FALSE:
        raise self._error(dataset, shown, "is not a bool (true/false, 1/0, yes/no)")
      return low in _TRUE
    return text


class Schema:
  """The options of one dataset's loader, in the order they are documented."""

  def __init__(self, dataset: str, options: Iterable[Option]):
    self.dataset = dataset
    self.options = {o.name: o for o in options}
    for name in self.options:
      if name in RESERVED:
        raise ValueError(f"{dataset}: {name!r} is set by jxhash.data.load, not a loader option")

  def __iter__(self):
    return iter(self.options.values())

  def __contains__(self, name) -> bool:
    return name in self.options

  def __getitem__(self, name) -> Option:
    return self.options[name]

  @property
  def names(self) -> list[str]:
    return list(self.options)

  def defaults(self) -> dict:
    return {name: o.default for name, o in self.options.items()}

  def default(self, name: str):
    return self.options[name].default

  def _unknown(self, key: str) -> DataError:
    if key in RESERVED:
      return DataError(f"dataset {self.dataset!r}: {key!r} is not a loader option; give it to "
                       f"jxhash.data.load as {RESERVED[key]}")
    close = difflib.get_close_matches(key, self.names, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    valid = ", ".join(sorted(self.names)) or "none"
    return DataError(f"dataset {self.dataset!r}: unknown option {key!r}{hint}; valid options: {valid}")

  def check(self, values: Mapping) -> dict:
    """Every option's value: the given ones validated, the others at their defaults."""
    out = self.defaults()
    for key, value in values.items():
      if key not in self.options:
        raise self._unknown(key)
      out[key] = self.options[key].check(value, self.dataset)
    return out

  def parse(self, pairs: Iterable[str]) -> dict:
    """{key: typed value} of "key=value" strings (only the keys given; `check` adds defaults)."""
    out = {}
    for item in pairs:
      key, sep, text = str(item).partition("=")
      key = key.strip().replace("-", "_")
      if not sep or not key:
        raise DataError(f"dataset {self.dataset!r}: data option {item!r} is not key=value; valid options: "
                        f"{', '.join(sorted(self.names))}")
      if key not in self.options:
        raise self._unknown(key)
      if key in out:
        raise DataError(f"dataset {self.dataset!r}: option {key} is given twice")
      out[key] = self.options[key].parse(text, self.dataset)
    return out

  @staticmethod
  def record(resolved: Mapping) -> dict:
    """JSON-ready copy of resolved options (tuples as lists), for `split_info["options"]`."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()}

  def markdown(self) -> str:
    """A Markdown table of the options: name, type, default, meaning (values as typed on the
    command line)."""
    lines = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for o in self:
      kind = o.describe().replace("'", "").replace("|", "/")
      lines.append(f"| `{o.name}` | {kind} | `{cli_text(o.default)}` | {o.doc} |")
    return "\n".join(lines)


def cli_text(value) -> str:
  """`value` as it is written in --data-option key=value."""
  if value is None:
    return "none"
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (tuple, list)):
    return ",".join(cli_text(v) for v in value)
  return str(value)


def markdown(schemas: Mapping[str, Schema]) -> str:
  """The option tables of every dataset, as docs/data.md holds them."""
  parts = []
  for name, schema in schemas.items():
    parts.append(f"### `{name}`\n\n{schema.markdown()}\n")
  return "\n".join(parts)


__all__ = ["KINDS", "Option", "Schema", "cli_text", "markdown"]
