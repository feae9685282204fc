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
