"""Results files: one JSON per run, written atomically, never silently replacing another run's.

A results file carries its run's identity (`jxhash.runs.identity`) at the top level, besides the
metrics; a file is only replaced by a run with the same identity (or with `overwrite`). In a
multi-process run only process 0 checks and writes results files (the others compute the same
metrics and write nothing).
"""

from __future__ import annotations

import json
import pathlib
import platform

import jax
import numpy as np

from jxhash import __version__, fileio
from jxhash.errors import UserError
from jxhash.fileio import to_json
from jxhash.runs.identity import describe_diff, identity_diff, run_identity


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
      "device": devices[0].device_kind, "num_devices": len(devices), "num_processes": jax.process_count(),
  }


def build(spec, config, data, options, fit_result, *, extra: dict | None = None,
          identity: dict | None = None) -> dict:
  """The results dict of a finished `trainer.fit` run (see the README for its keys).

  `identity`: the run's `jxhash.runs.identity.run_identity`, when the caller computed it already.
  """
  final = fit_result.final
  out = {
      **(identity if identity is not None else run_identity(spec, config, data, options)),
      "bits": config.bits,
      "map": {d: final[d]["map"] for d in ("i2t", "t2i")},
      "metrics": final,
      "selected": fit_result.selected,
      "split_sizes": data.sizes(),
      "data_files": to_json(data.split_info.get("files", [])),
      "effective_batch_sizes": effective_batch_sizes(spec, config, int(data.train.size)),
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


def effective_batch_sizes(spec, config, num_train: int) -> dict:
  """{"<stage>/<phase>": rows per step actually used} (a phase's batch is at most the training set)."""
  return {f"{stage.name}/{phase.name}": min(phase.batch_size, num_train)
          for stage in spec.stages(config, num_train) for phase in stage.phases}


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


RESULTS_LIMIT = 64 << 20  # bytes: larger files at --out are not read to find out whether they are results


def check_writable(path, identity: dict, *, overwrite: bool = False) -> None:
  """Refuse (UserError) to replace a results file that records a different run.

  Args:
    path: the results file.
    identity: `jxhash.runs.identity.run_identity` of the run about to write it.
    overwrite: replace whatever is there.

  Only process 0 of a multi-process run checks (the only one that writes).
  """
  path = pathlib.Path(path)
  if path.is_symlink():
    raise UserError(f"{path} is a symbolic link; a results file is never written through a link: remove it "
                    "or choose another --out")
  if overwrite or not path.exists() or jax.process_index() != 0:
    return
  try:
    # sized before it is read: a results file is kilobytes, a file of gigabytes is something else
    size = path.stat().st_size if path.is_file() else None
    old = json.loads(path.read_text()) if size is not None and size <= RESULTS_LIMIT else None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
    old = None
  if not isinstance(old, dict):
    raise UserError(f"{path} exists and is not a jxhash results file; choose another --out or pass --overwrite")
  diff = identity_diff(old, identity)
  if diff:
    raise UserError(f"{path} holds results of a different run ({describe_diff(diff)}; file vs this run); "
                    "choose another --out or pass --overwrite")


def write(path, results: dict) -> None:
  """Write atomically (temp file, fsync, rename): an interrupted write never leaves half a file.

  In a multi-process run only process 0 writes; the call does nothing on the others.
  """
  if jax.process_index() != 0:
    return
  fileio.atomic_write_json(path, to_json(results), what="results file")
