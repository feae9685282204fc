"""jxhash: deep cross-modal hashing in JAX/Flax.

Submodules (imported on first use, so that importing one part does not import the others):
`data` (datasets), `metrics` (Hamming ranking), `losses` (shared loss terms), `codes` (±1
codes), `nets` (Flax networks), `spec` (the method contract), `methods` (the METHODS registry),
`train` (the generic trainer) with `inputs`, `epochs`, `streaming`, `evaluation` and
`runstate`, `checkpoint` (orbax save/restore), `identity` (what makes two runs the same),
`results` (results files), `index` (packed-code search), `parallel` (device mesh), `fileio`
(atomic writes, user paths).
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_SUBMODULES = ("checkpoint", "codes", "config", "data", "epochs", "errors", "evaluation", "fileio", "identity",
               "index", "inputs", "losses", "methods", "metrics", "nets", "parallel", "results", "runstate", "spec",
               "streaming", "train")


def __getattr__(name: str):
  if name in _SUBMODULES:
    return importlib.import_module(f"jxhash.{name}")
  raise AttributeError(f"module 'jxhash' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_SUBMODULES))


__all__ = list(_SUBMODULES)
