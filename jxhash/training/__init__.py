"""The generic trainer and what it runs on: `trainer` (`fit`, `TrainOptions`, `FitResult`),
`epochs` (compiled epochs), `streaming` (host-fed pixel batches), `inputs` (normalisation),
`evaluation` (encoding and the val/test protocol), `runstate` (the one state pytree),
`metric_log` (TensorBoard logs) and `progress` (the progress bar).

May import: `jxhash.spec`, `jxhash.data`, `jxhash.metrics`, `jxhash.distributed`,
`jxhash.errors`, `jxhash.fileio`; never a method (a `MethodSpec` is handed in) nor a command.
`fit`, `TrainOptions` and `FitResult` are reachable here without importing the trainer for
the submodules that the inference path needs (`evaluation`, `inputs`, `runstate`).
"""

import importlib

_TRAINER = ("fit", "TrainOptions", "FitResult")


def __getattr__(name: str):
  if name in _TRAINER:
    return getattr(importlib.import_module("jxhash.training.trainer"), name)
  raise AttributeError(f"module 'jxhash.training' has no attribute {name!r}")
