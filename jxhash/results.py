"""Results files: one JSON per run, written atomically, never silently replacing another run's."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import tempfile

import jax
import numpy as np

from jxhash import __version__
from jxhash.errors import UserError

# keys that say which experiment a results file is; a file with other values is not replaced
IDENTITY_KEYS = ("method", "dataset", "bits", "config", "seed", "num_seeds", "split", "augment")


def environment() -> dict:
  """Versions and the device the run used."""
  import flax
  import optax
  import orbax.checkpoint
  devices = jax.devices()
  return {
      "jxhash": __version__, "jax": jax.__version__, "flax": flax.__version__,
      "optax": optax.__version__, "orbax": orbax.checkpoint.__version__, "numpy": np.__version__,
      "python": platform.python_version(), "backend": jax.default_backend(),
      "device": devices[0].device_kind, "num_devices": len(devices),
  }


def build(spec, config, data, options, fit_result, *, extra: dict | None = None) -> dict:
  """The results dict of a finished `train.fit` run (see the README for its keys)."""
  final = fit_result.final
  out = {
      "method": spec.name,
      "dataset": data.name,
      "bits": config.bits,
      "map": {d: final[d]["map"] for d in ("i2t", "t2i")},
      "metrics": final,
      "selected": fit_result.selected,
      "config": to_json(dataclasses.asdict(config)),
      "seed": options.seed,
      "num_seeds": options.num_seeds,
      "split": to_json(data.split_info),
      "split_sizes": data.sizes(),
      "normalize": options.normalize,
      "augment": options.augment,
      "train_time_s": round(fit_result.train_time, 2),
      "fidelity": spec.fidelity,
      "history": fit_result.history,
      "environment": environment(),
  }
  if spec.report is not None:
    out["method_report"] = spec.report(jax.tree.map(lambda x: x[0], fit_result.state.model))
  if options.num_seeds > 1:
    out["map_std"] = {d: final[d]["map_std"] for d in ("i2t", "t2i")}
    per_seed = [{d: scalar_metrics(r[d]) for d in ("i2t", "t2i")} for r in fit_result.per_seed]
    out["seed_stats"] = seed_statistics(per_seed)
    out["per_seed"] = [{"seed": options.seed + i, **r} for i, r in enumerate(per_seed)]
  out.update(extra or {})
  return to_json(out)


def scalar_metrics(metrics: dict) -> dict:
  """The single-number metrics of one direction: {"map", "map@<k>" for each k}."""
  return {"map": metrics["map"], **{f"map@{k}": v for k, v in metrics.get("map@k", {}).items()}}


def seed_statistics(per_seed: list) -> dict:
  """{direction: {metric: {"mean", "std", "min", "max"}}} over seeds.

  Args:
    per_seed: one {direction: {metric: value}} per seed (`scalar_metrics` of each direction).
  """
  out = {}
  for direction in per_seed[0]:
    out[direction] = {}
    for name in per_seed[0][direction]:
      values = np.array([r[direction][name] for r in per_seed], np.float64)
      out[direction][name] = {"mean": float(values.mean()), "std": float(values.std()),
                              "min": float(values.min()), "max": float(values.max())}
  return out


def check_writable(path, identity: dict, *, overwrite: bool = False) -> None:
  """Refuse (UserError) to replace a results file that records a different experiment."""
  path = pathlib.Path(path)
  if overwrite or not path.exists():
    return
  try:
    old = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    raise UserError(f"{path} exists and is not a jxhash results file; choose another --out or pass --overwrite")
  old = {"augment": "none", **old}  # files written before "augment" was recorded: none
  diff = [k for k in IDENTITY_KEYS if to_json(old.get(k)) != to_json(identity.get(k))]
  if diff:
    raise UserError(f"{path} holds results of a different run (differs in {', '.join(diff)}); "
                    "choose another --out or pass --overwrite")


def write(path, results: dict) -> None:
  """Write atomically (temp file + rename) so an interrupted write never leaves half a file."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    json.dump(to_json(results), f, indent=2)
  os.replace(tmp, path)


def to_json(x):
  """numpy scalars, arrays and tuples turned into plain JSON values, recursively."""
  if isinstance(x, dict):
    return {str(k): to_json(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_json(v) for v in x]
  if isinstance(x, (np.generic,)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return x
