"""The training progress bar: tqdm on a terminal, a few plain lines in a log file.

tqdm redraws its bar in place with carriage returns; written to a file (a batch job's log,
`nohup`, CI) every redraw stays, one per epoch, 55 KB for a 500-epoch run. When the stream is
not a terminal `bar` writes instead one ordinary line (ending in a newline) at most every
`1/MAX_LINES` of the run and every `MIN_SECONDS`, plus the last epoch, so a log holds about
`MAX_LINES` lines per run whatever its length, each with the latest losses and val mAP.

Synopsis:

    from jxhash.training import progress
    bar = progress.bar(total=500, initial=0, desc="dcmh", enabled=True)
    for epoch in ...:
      bar.set_postfix({"image/loss": "0.95"}, refresh=False)
      bar.update(1)
    bar.close()
"""

from __future__ import annotations

import math
import sys
import time

MAX_LINES = 20
MIN_SECONDS = 30.0


def bar(total: int, initial: int, desc: str, enabled: bool, *, file=None):
  """A progress bar over `total` epochs starting at `initial`, writing to `file` (stderr).

  tqdm (the notebook widget in Jupyter) when `file` is a terminal or a notebook is running,
  else a `LineProgress`. Both take `update(n)`, `set_postfix(dict, refresh=False)` and `close()`.
  """
  from tqdm.auto import tqdm
  stream = sys.stderr if file is None else file
  notebook = any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)  # tqdm.auto's pick in Jupyter
  if not enabled or notebook or _is_terminal(stream):
    return tqdm(total=total, initial=initial, desc=desc, unit="epoch", disable=not enabled,
                dynamic_ncols=True, file=file)
  return LineProgress(total, initial, desc, stream)


def _is_terminal(stream) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):  # no isatty, or a closed stream
    return False


class LineProgress:
  """Sparse newline-terminated progress lines for logs: `desc: epoch 40/500 (8%), 1.2 s/epoch, ...`.

  A line is written when at least `total / max_lines` epochs have passed since the last one
  and `min_seconds` have passed, and always at the last epoch; nothing before the first epoch.
  """

  def __init__(self, total: int, initial: int, desc: str, stream, *, max_lines: int = MAX_LINES,
               min_seconds: float = MIN_SECONDS, clock=time.monotonic):
    self.total, self.n, self.desc, self.stream = total, initial, desc, stream
    self.every = max(1, math.ceil(total / max_lines))
    self.min_seconds = min_seconds
    self.clock = clock
    self.start_n, self.start_t = initial, clock()
    self.last_n, self.last_t = initial, self.start_t
    self.postfix = {}
    self.closed = False

  def set_postfix(self, values: dict, refresh: bool = False) -> None:
    del refresh  # lines are only written by update
    self.postfix = dict(values)

  def update(self, n: int = 1) -> None:
    self.n += n
    now = self.clock()
    due = self.n - self.last_n >= self.every and now - self.last_t >= self.min_seconds
    if due or self.n >= self.total:
      self._write(now)

  def _write(self, now: float) -> None:
    parts = [f"epoch {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%)"]
    if self.n > self.start_n:
      parts.append(f"{(now - self.start_t) / (self.n - self.start_n):.3g} s/epoch")
    parts += [f"{k}={v}" for k, v in self.postfix.items()]
    self.stream.write(f"{self.desc}: {', '.join(parts)}\n")
    self.stream.flush()
    self.last_n, self.last_t = self.n, now

  def close(self) -> None:
    self.closed = True
