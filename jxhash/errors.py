"""Errors that mean "the user asked for something wrong", as opposed to bugs.

The CLI turns any `UserError` into one line on stderr and exit code 2; everything else is a bug
and keeps its traceback.
"""


class UserError(ValueError):
  """Bad input from the user: a missing file or key, a bad shape, value or option."""


class DataError(UserError):
  """A dataset file is missing, unreadable or inconsistent; the message names the file."""


class CheckpointError(UserError):
  """A checkpoint is missing, corrupt, or was written for another method/dataset/config."""


class TrainingDiverged(RuntimeError):
  """A loss became NaN or inf; the message names the stage, phase and epoch."""


# exit code of a run that diverged (2 is a user error, 3 a failed peer process, 130 Ctrl-C)
DIVERGED_EXIT = 4


class TrainingInterrupted(Exception):
  """Training stopped by Ctrl-C; the message says where, and that `--resume` continues it."""


def exit_code(fn, *args) -> int:
  """Run a command-line entry point: 0 on success; a UserError is one line on stderr and 2.

  A Ctrl-C is one line too, with exit code 130 (the shell's convention for SIGINT). Anything else
  is a bug and keeps its traceback.
  """
  import sys
  try:
    fn(*args)
  except UserError as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
    return 2
  except TrainingDiverged as e:
    print(f"diverged: {_one_line(e)}; try a smaller learning rate (--set lr=...)", file=sys.stderr)
    return DIVERGED_EXIT
  except TrainingInterrupted as e:
    print(f"interrupted: {_one_line(e)}", file=sys.stderr)
    return 130
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  return 0


def _one_line(e: Exception) -> str:
  return " ".join(str(e).split())
