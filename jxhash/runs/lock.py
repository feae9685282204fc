"""A lock on a run directory, so that two processes never train into the same checkpoints.

The lock is an advisory `flock` on `<run dir>/.lock`, which also records the holder's process
id, host and start time for the refusal message. The kernel drops a `flock` when its process
dies (SIGKILL included), so a lock left by a dead process is simply taken over: there is no
stale-lock state to clean up. Within one process the lock is re-entrant (a second store on the
same directory shares it), because flock would otherwise refuse the process its own lock.
`flock` is local to one machine (and unreliable on some network filesystems): multi-host runs
lock on the host that writes (process 0).
"""

from __future__ import annotations

import datetime
import fcntl
import os
import pathlib
import socket
import stat
import threading

from jxhash.errors import CheckpointError

LOCK_FILE = ".lock"
_HELD: dict[pathlib.Path, list] = {}  # directory -> [file object, count] held by this process
_GUARD = threading.Lock()


def _holder(path: pathlib.Path) -> str:
  try:
    text = path.read_text().strip()
  except OSError:
    text = ""
  return text or "another process"


class RunLock:
  """Hold the lock of one run directory until `release` (or garbage collection).

  Raises:
    CheckpointError: another live process holds it; the message names the holder.
  """

  def __init__(self, directory):
    self.directory = pathlib.Path(directory)
    self._released = False
    with _GUARD:
      held = _HELD.get(self.directory)
      if held is not None:
        held[1] += 1
        return
      path = self.directory / LOCK_FILE
      try:
        # never through a symbolic link: a run folder received from someone else could point its
        # lock at any file the user can write, and taking the lock truncates it
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
      except OSError as e:
        if path.is_symlink():
          raise CheckpointError(f"{path} is a symbolic link; a run folder's lock file is never a link: "
                                "remove it") from None
        raise CheckpointError(f"cannot open the lock file {path}: {e.strerror}") from None
      if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"{path} is not a regular file; remove it")
      f = os.fdopen(fd, "a+")  # noqa: SIM115 - kept open while the lock is held
      try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        f.close()
        raise CheckpointError(f"run directory {self.directory} is in use by {_holder(path)}; wait for it to "
                              "finish or stop it (a lock left by a process that died is taken over)") from None
      started = datetime.datetime.now().isoformat(timespec="seconds")
      f.seek(0)
      f.truncate()
      f.write(f"process {os.getpid()} on {socket.gethostname()} since {started}\n")
      f.flush()
      _HELD[self.directory] = [f, 1]

  def release(self) -> None:
    if self._released:
      return
    self._released = True
    with _GUARD:
      held = _HELD.get(self.directory)
      if held is None:
        return
      held[1] -= 1
      if held[1] == 0:
        f = held[0]
        del _HELD[self.directory]
        try:
          f.seek(0)
          f.truncate()
        except OSError:
          pass
        f.close()  # closing the file drops the flock

  def __del__(self):
    self.release()
