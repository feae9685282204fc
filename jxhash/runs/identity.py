"""What makes two runs the same run: one definition for checkpoints, results files and the CLI.

A run's identity is everything that changes its result: the method and its full config, the
dataset (name, split rule and seeds, every loader option, and a fingerprint of the arrays
themselves: `CrossModalData.fingerprint`), the input sizes, the model seeds, the input
normalisation and the augmentation. Where the files were read from is provenance, not identity
(moving the data does not make another run). A checkpoint may only be resumed, and a results
file only replaced, by a run with the same identity; a refusal names the keys that differ.

Each run also gets a name from its identity (`run_name`): readable fields plus a short hash of
the whole identity, e.g. `dcmh-wikipedia-32bits-seed0-3f9a1c2e`. The CLI derives the run's
checkpoint directory and results file from it, so different runs never share a directory and
`--resume` finds the run it continues.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

from jxhash.errors import UserError

from jxhash.fileio import to_json
from jxhash.spec import Dims

# keys of `run_identity`; a run with another value of any of them is a different run
IDENTITY_KEYS = ("method", "dataset", "config", "dims", "num_train", "seed", "num_seeds", "split", "normalize",
                 "augment", "data_fingerprint")
# split_info entries that say where the data came from, not what it is
_PROVENANCE = ("files",)
# values assumed for keys that files written by older versions lack
_LEGACY = {"augment": "none"}


def run_identity(spec, config, data, options) -> dict:
  """The identity of training `spec` with `config` on `data` under trainer `options`."""
  return to_json({
      "method": spec.name,
      "dataset": data.name,
      "config": dataclasses.asdict(config),
      "dims": Dims.of(data).to_json(),
      "num_train": int(data.train.size),
      "seed": options.seed,
      "num_seeds": options.num_seeds,
      "split": {k: v for k, v in data.split_info.items() if k not in _PROVENANCE},
      "normalize": options.normalize,
      "augment": options.augment,
      "data_fingerprint": data.fingerprint(),
  })


def _flat(prefix: str, value) -> dict:
  if isinstance(value, dict):
    out = {}
    for k, v in value.items():
      out.update(_flat(f"{prefix}.{k}" if prefix else str(k), v))
    return out
  return {prefix: value}


def identity_diff(saved: dict, current: dict) -> list[tuple[str, object, object]]:
  """[(key, saved value, current value)] for every identity entry that differs.

  Nested entries (config fields, split details) are compared leaf by leaf and named with dots,
  e.g. ("config.epochs", 40, 500).
  """
  saved = {**_LEGACY, **saved}
  out = []
  for key in IDENTITY_KEYS:
    a, b = _flat(key, to_json(saved.get(key))), _flat(key, to_json(current.get(key)))
    for leaf in sorted(set(a) | set(b)):
      if a.get(leaf) != b.get(leaf):
        out.append((leaf, a.get(leaf), b.get(leaf)))
  return out


def describe_diff(diff: list, limit: int = 4) -> str:
  """'config.epochs: 40 vs 500; seed: 0 vs 1' (saved vs current), at most `limit` entries."""
  parts = [f"{key}: {a!r} vs {b!r}" for key, a, b in diff[:limit]]
  if len(diff) > limit:
    parts.append(f"and {len(diff) - limit} more")
  return "; ".join(parts)


def identity_hash(identity: dict, length: int = 8) -> str:
  """A short hex digest of the whole identity (canonical JSON, sorted keys)."""
  text = json.dumps(to_json({k: identity.get(k) for k in IDENTITY_KEYS}), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_name(name: str) -> str:
  """A user-chosen run name: letters, digits, '.', '_' and '-', starting with a letter or digit."""
  if not isinstance(name, str) or not _NAME.fullmatch(name):
    raise UserError(f"--name {name!r}: use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit")
  return name


def run_name(identity: dict) -> str:
  """`<method>-<dataset>-<bits>bits-seed<s>[x<S>]-<hash>`: readable, and unique per identity."""
  seeds = f"seed{identity['seed']}" + (f"x{identity['num_seeds']}" if identity.get("num_seeds", 1) > 1 else "")
  bits = identity.get("config", {}).get("bits", "?")
  name = f"{identity['method']}-{identity['dataset']}-{bits}bits-{seeds}-{identity_hash(identity)}"
  # the name becomes a folder and a file name: every part of it must be a plain name
  if not _NAME.fullmatch(name):
    raise UserError(f"dataset name {identity['dataset']!r} cannot be part of a run name (a file name): use "
                    "letters, digits, '.', '_' and '-' only, at most 100 characters")
  return name
