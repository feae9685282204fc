"""What makes two runs the same run: one definition for checkpoints, results files and the CLI.

A run's identity is everything that changes its result: the method and its full config, the
dataset (name, split rule and seeds, loader options), the input sizes, the model seeds, the
input normalisation and the augmentation. A checkpoint may only be resumed, and a results file
only replaced, by a run with the same identity; a refusal names the keys that differ.
"""

from __future__ import annotations

import dataclasses

from jxhash.fileio import to_json
from jxhash.spec import Dims

# keys of `run_identity`; a run with another value of any of them is a different run
IDENTITY_KEYS = ("method", "dataset", "config", "dims", "num_train", "seed", "num_seeds", "split", "normalize",
                 "augment")
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
      "split": data.split_info,
      "normalize": options.normalize,
      "augment": options.augment,
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
