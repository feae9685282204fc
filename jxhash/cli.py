"""What every command-line entry point shares: one-line errors with exit code 2.

`ArgumentParser` reports a bad flag as one line (`error: argument --seeds: must be >= 1, got 0
(see --help)`) instead of argparse's usage block, and `main(fn, argv, parser)` runs a command:
0 on success, 2 for a user error (one line on stderr), 130 for Ctrl-C, the traceback of
anything else (a bug). While a command runs, orbax's and asyncio's own log records are not
shown: when a save fails, orbax's writer threads log every failed write with its traceback
(hundreds of lines), and jxhash reports the failure itself in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from typing import Callable

from jxhash.errors import exit_code


class ArgumentParser(argparse.ArgumentParser):
  """argparse with one-line errors and exit code 2, like every other user error in jxhash."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    super().__init__(*args, **kwargs)

  def error(self, message):
    self.exit(2, f"error: {message} (see --help)\n")


def int_at_least(low: int) -> Callable[[str], int]:
  """An argparse type: an integer >= `low`."""

  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
      raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value

  return parse


def float_at_least(low: float) -> Callable[[str], float]:
  """An argparse type: a finite number >= `low`."""

  def parse(text: str) -> float:
    try:
      value = float(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= low or value == float("inf"):
      raise argparse.ArgumentTypeError(f"must be a finite number >= {low:g}, got {text}")
    return value

  return parse


def main(fn: Callable, argv, parser: argparse.ArgumentParser) -> int:
  """Parse `argv` with `parser` and run `fn(args)`: the exit code (module docstring)."""
  try:
    with _quiet_logs(*_QUIET):
      code = exit_code(lambda: fn(parser.parse_args(argv)))
  except SystemExit as e:  # --help (0) or a bad flag (2, its one line already printed)
    return e.code if isinstance(e.code, int) else 2
  if code != 0:
    # the failure is reported (one line); writer threads that fail with it (orbax's, after a full
    # disk) log their own echoes until the process ends: those stay silent too
    for name in _QUIET:
      logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    if argv is None:
      quiet_after_failure()
  return code


_QUIET = ("absl", "asyncio")


def quiet_after_failure() -> None:
  """Send whatever the process prints to stderr after its one-line error to /dev/null.

  Only for a command-line process that is about to exit with an error it has reported: orbax's
  writer threads, failing with the same full disk, have native code (tensorstore callbacks into a
  closed asyncio loop) print tracebacks at exit, which no Python handler sees. Never called for
  in-process calls (`main(argv)` with a list), which must not lose their stderr.
  """
  import os
  import sys
  sys.stderr.flush()
  try:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
  except OSError:
    pass


@contextlib.contextmanager
def _quiet_logs(*names: str):
  loggers = [logging.getLogger(n) for n in names]
  levels = [lg.level for lg in loggers]
  for lg in loggers:
    lg.setLevel(logging.CRITICAL + 1)
  try:
    yield
  finally:
    for lg, level in zip(loggers, levels):
      lg.setLevel(level)
