"""jxhash: deep cross-modal hashing in JAX/Flax.

Packages by role (each package's docstring says what it may import; arrows point down only):

    commands/      the `jxhash` command line (train, sweep, reproduce, report, index, launch, ...)
    experiment     one experiment end to end (`run(settings) -> Results`), `settings` its config tree
    training/      the generic trainer and its parts; `runs/` what a run keeps on disk
    inference      restore a checkpoint and encode (imports no trainer); `checkpoint` names both
    methods/       one module per method (networks from `nets/`, loss terms from `losses`)
    metrics/, index/, data/, nets/, losses, codes    arrays in, arrays out
    distributed/   device mesh and process group;  errors, fileio, cli, config   foundations

Submodules are imported on first use (`jxhash.metrics`, ...), so importing one part does not
import the others.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_SUBMODULES = ("checkpoint", "codes", "config", "data", "distributed", "errors", "experiment", "fileio", "index",
               "inference", "losses", "methods", "metrics", "nets", "runs", "settings", "spec", "training")


def __getattr__(name: str):
  if name in _SUBMODULES:
    return importlib.import_module(f"jxhash.{name}")
  raise AttributeError(f"module 'jxhash' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_SUBMODULES))


__all__ = list(_SUBMODULES)
