"""Files jxhash reads and writes: user paths resolved once, outputs written atomically.

Every file jxhash writes goes through `atomic_write` (or `atomic_output` for writers that need
a file name, such as `np.savez` or matplotlib's `savefig`): the bytes go to a temporary file in
the target's directory, which is flushed, fsynced and renamed over the target, and the directory
is fsynced. A crash, a full disk or a Ctrl-C therefore leaves either the old file or the new
one, never half of one, and no temporary file survives an error. New files get the permissions
the user's umask gives (`tempfile.mkstemp` would leave them 0600).

User paths are resolved once, at the boundary (`resolve`): `~` expanded, made absolute and
symlinks followed, so that libraries that need absolute paths (orbax) and messages see the
same path. Output locations are checked before long work starts (`require_writable_file`,
`require_writable_dir`), by creating and removing a probe file: permission bits alone say
nothing for root or on a read-only mount.

Synopsis:

    from jxhash import fileio
    out = fileio.require_writable_file("results/run.json", what="--out")
    ...                                   # hours of training
    fileio.atomic_write_json(out, results)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import re
import tempfile
from typing import Iterator

import numpy as np

from jxhash.errors import UserError

_TMP_SUFFIX = ".jxhash-tmp"


def resolve(path) -> pathlib.Path:
  """`path` with `~` expanded, made absolute and symlinks resolved (it need not exist)."""
  return pathlib.Path(os.fspath(path)).expanduser().resolve()


def umask() -> int:
  """The process's file-creation mask, read without changing it where /proc allows."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  mask = os.umask(0o022)  # no /proc: the classic read-and-restore (not thread-safe, but brief)
  os.umask(mask)
  return mask


def _fsync_dir(directory: pathlib.Path) -> None:
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass  # some filesystems refuse fsync on directories; the rename is still atomic
  finally:
    os.close(fd)


def describe_os_error(e: OSError) -> str:
  """A short reason for an OSError ("No space left on device", "Permission denied", ...)."""
  return e.strerror or (errno.errorcode.get(e.errno, "") if e.errno else "") or str(e)


@contextlib.contextmanager
def atomic_output(path, *, what: str = "file") -> Iterator[pathlib.Path]:
  """Yield a temporary path next to `path`; when the block ends normally, it replaces `path`.

  The writer in the block writes the whole file to the yielded path. On any exception the
  temporary file is removed and `path` keeps its previous content; an OSError (disk full,
  permission) becomes a UserError naming `what` and the path.
  """
  target = resolve(path)
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=_TMP_SUFFIX)
    os.close(fd)
  except OSError as e:
    raise UserError(f"cannot write {what} {target}: {describe_os_error(e)}") from e
  tmp = pathlib.Path(tmp_name)
  try:
    yield tmp
    os.chmod(tmp, 0o666 & ~umask())
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    os.replace(tmp, target)
  except OSError as e:
    raise UserError(f"cannot write {what} {target}: {describe_os_error(e)}; the previous file, if any, "
                    "is unchanged") from e
  finally:
    with contextlib.suppress(FileNotFoundError):
      tmp.unlink()
  _fsync_dir(target.parent)


def atomic_write(path, data: bytes | str, *, what: str = "file") -> pathlib.Path:
  """Write `data` (str as UTF-8) to `path` atomically; returns the resolved path."""
  payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
  with atomic_output(path, what=what) as tmp:
    with open(tmp, "wb") as f:
      f.write(payload)
      f.flush()
  return resolve(path)


def atomic_write_json(path, obj, *, what: str = "file", **dump_options) -> pathlib.Path:
  """`json.dumps(obj, indent=2)` (plus `dump_options`) written atomically."""
  dump_options.setdefault("indent", 2)
  return atomic_write(path, json.dumps(obj, **dump_options) + "\n", what=what)


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
  while not path.exists() and path.parent != path:
    path = path.parent
  return path


def _probe(directory: pathlib.Path, what: str, target: pathlib.Path) -> None:
  """Create and remove a file in `directory`: the only reliable writability test."""
  try:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".jxhash-probe-", suffix=_TMP_SUFFIX)
    os.close(fd)
    os.unlink(name)
  except OSError as e:
    raise UserError(f"{what} {target} is not writable: {describe_os_error(e)} in {directory}") from e


def require_writable_file(path, *, what: str = "output file") -> pathlib.Path:
  """The resolved `path` if a file can be written there; a UserError naming `what` otherwise.

  `path` may exist (a regular file, replaced later) or not (its missing parent directories
  would be created); it must not be a directory, nor lie under a regular file.
  """
  target = resolve(path)
  if target.is_dir():
    raise UserError(f"{what} {target} is a directory; give a file name")
  if target.exists() and not target.is_file():
    raise UserError(f"{what} {target} exists and is not a regular file")
  anchor = _nearest_existing(target.parent)
  if not anchor.is_dir():
    raise UserError(f"{what} {target} lies under {anchor}, which is a file, not a directory")
  _probe(anchor, what, target)
  return target


def require_writable_dir(path, *, what: str = "output directory") -> pathlib.Path:
  """The resolved `path` if it is (or can be created as) a writable directory; else a UserError."""
  target = resolve(path)
  if target.exists() and not target.is_dir():
    raise UserError(f"{what} {target} is a file, not a directory")
  anchor = _nearest_existing(target)
  if not anchor.is_dir():
    raise UserError(f"{what} {target} lies under {anchor}, which is a file, not a directory")
  _probe(anchor, what, target)
  return target


def require_readable_file(path, *, what: str = "file") -> pathlib.Path:
  """The resolved `path` if it is an existing regular file; a UserError naming `what` otherwise."""
  target = resolve(path)
  if not target.exists():
    raise UserError(f"{what} {target} does not exist")
  if not target.is_file():
    raise UserError(f"{what} {target} is not a regular file")
  return target


def to_json(x):
  """numpy scalars, arrays and tuples turned into plain JSON values, recursively."""
  if isinstance(x, dict):
    return {str(k): to_json(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_json(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return x


# ---------------------------------------------------------------------------------------------
# Checks on what a caller passes as a path or a path component: one place for every entry point.

_COMPONENT = re.compile(r"[^/\\\x00-\x1f\x7f-\x9f]{1,100}")


def user_path(value, what: str) -> pathlib.Path:
  """`value` as a Path if it is a str or an os.PathLike of str; a UserError naming `what` otherwise.

  Bytes paths are refused too: every message and JSON record jxhash writes holds text, and a
  bytes path would be recorded as "b'...'". An empty string is refused (it would mean the
  current directory without saying so).
  """
  if isinstance(value, os.PathLike):
    value = os.fspath(value)
  if not isinstance(value, str):
    raise UserError(f"{what} must be a path (str or os.PathLike), got {type(value).__name__} {_short_repr(value)}")
  if not value.strip():
    raise UserError(f"{what} must be a path, got an empty string")
  if "\0" in value:
    raise UserError(f"{what} {_short_repr(value)} contains a NUL character")
  return pathlib.Path(value)


def check_path_component(value, what: str) -> str:
  """`value` if it can be one component of a path (a file or directory name); else a UserError.

  Refused: anything but a str, the empty string, more than 100 characters, a path separator
  ('/' or '\\'), '..' anywhere (so neither '..' nor 'a/../b' can climb out of the folder it is
  put in), '.', and control characters (a trailing newline included: the whole string must
  match, so `re.fullmatch`, never a `$` anchor, which also accepts "name\\n").
  """
  if not isinstance(value, str):
    raise UserError(f"{what} must be a str, got {type(value).__name__} {_short_repr(value)}")
  if not _COMPONENT.fullmatch(value) or ".." in value or value == ".":
    raise UserError(f"{what} {_short_repr(value)} cannot be a file name: use 1 to 100 characters with no '/', "
                    "'\\', '..' or control characters")
  return value


def _short_repr(value, limit: int = 80) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[:limit] + "..."


def refuse_link(path, what: str) -> pathlib.Path:
  """`path` (`user_path`, `~` expanded) if no symbolic link sits there; else a UserError. Writers
  call it before resolving: a resolved path has followed the link to a file someone else owns."""
  given = user_path(path, what).expanduser()
  if given.is_symlink():
    raise UserError(f"{what} {given} is a symbolic link; give the real file name (outputs never follow links)")
  return given


def require_new_output(path, *, what: str, overwrite: bool = False) -> pathlib.Path:
  """The resolved path of an output file that this command may (re)place; else a UserError.

  `require_writable_file`, plus: a symbolic link at `path` is refused whatever `overwrite`
  says (writing through it would replace a file elsewhere; `atomic_output` would replace the
  link itself, which is not what its author meant either), and an existing file is refused
  unless `overwrite`. The existing file is never opened, so its size does not matter.
  """
  given = refuse_link(path, what)
  target = require_writable_file(given, what=what)
  if target.exists() and not overwrite:
    raise UserError(f"{what} {target} already exists; pass --overwrite to replace it")
  return target
