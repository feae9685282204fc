"""Read ahead on a background thread, so host I/O overlaps device compute.

The trainer's streamed path (`jxhash.training`, for image stacks that stay on disk) reads each
batch's pixel rows from an HDF5 file and copies them to the device. JAX dispatches device work
asynchronously, so while step t runs, this thread reads and transfers the batches after it.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

_DONE = object()


class _Failed:
  def __init__(self, error: BaseException):
    self.error = error


def prefetch(items: Iterable, size: int = 2) -> Iterator:
  """Yield `items` in order, produced up to `size` ahead on a daemon thread.

  An exception raised while producing an item is re-raised here, at that item. Stopping early
  (break, an exception in the consumer, garbage collection of the generator) stops the thread
  at its next item; the producer never blocks forever on a full queue.

  Args:
    items: any iterable; its iteration (I/O, `jax.device_put`) runs on the thread.
    size: how many items may wait, ready (>= 1).
  """
  if size < 1:
    raise ValueError(f"prefetch size must be >= 1, got {size}")
  ready: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        ready.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in items:
        if not put(item):
          return
      put(_DONE)
    except BaseException as e:  # handed to the consumer, which re-raises it
      put(_Failed(e))

  thread = threading.Thread(target=produce, daemon=True, name="jxhash-prefetch")
  thread.start()
  try:
    while True:
      item = ready.get()
      if item is _DONE:
        return
      if isinstance(item, _Failed):
        raise item.error
      yield item
  finally:
    stop.set()
    thread.join(timeout=5)


__all__ = ["prefetch"]
