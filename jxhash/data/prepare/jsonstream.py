"""The top-level lists of a large JSON object, read one element at a time.

`json.loads` of COCO's `instances_train2017.json` (448 MiB) holds the text and every parsed
object at once: 3.15 GiB peak for `prepare coco` on a generated file of the real size
(experiments/coco_memory.py). `walk_object` reads the object's UTF-8 bytes block by block and
hands each element of a top-level list to a callback as soon as json's own decoder has parsed
it, so memory stays at one block, one element and what the callbacks keep. The values parsed
are json.loads's: only the reading is incremental.

ijson streams JSON too; this module keeps to the standard library because one reader of two
files does not earn a dependency, and because its values must be exactly json.loads's (ijson
gives `Decimal` for non-integers unless told otherwise, and its backends differ in speed by
platform), which the byte-identical outputs of `prepare` rely on.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Callable, Iterable

from jxhash.errors import DataError

_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# The longest single value (a list element, or a value that is not a list) read; COCO's are < 1 MiB.
MAX_VALUE = 64 << 20


class _Text:
  """A window over the decoded text: `buf[pos:]` is what is not consumed yet."""

  def __init__(self, chunks: Iterable[bytes], where: str):
    self.chunks = iter(chunks)
    self.where = where
    self.decoder = codecs.getincrementaldecoder("utf-8")()
    self.buf, self.pos, self.dropped, self.eof = "", 0, 0, False

  def more(self) -> bool:
    """Append blocks (keeping buf[pos:]) until the unread text has doubled; False at the end."""
    want, grew = 2 * (len(self.buf) - self.pos), False
    while not self.eof and (not grew or len(self.buf) - self.pos < want):
      try:
        chunk = next(self.chunks, None)
        text = self.decoder.decode(b"" if chunk is None else chunk, final=chunk is None)
      except UnicodeDecodeError as e:
        raise DataError(f"{self.where}: not UTF-8 text ({e.reason}); the file is damaged") from None
      self.eof = chunk is None
      if text:
        self.dropped += self.pos
        self.buf, self.pos, grew = self.buf[self.pos:] + text, 0, True
    return grew

  def error(self, what: str) -> DataError:
    return DataError(f"{self.where}: not valid JSON ({what} at character {self.dropped + self.pos}); "
                     "download it again")

  def peek(self) -> str:
    """The next character after white space ("" at the end), not consumed."""
    while True:
      self.pos = _SPACE.match(self.buf, self.pos).end()
      if self.pos < len(self.buf) or not self.more():
        return self.buf[self.pos:self.pos + 1]

  def expect(self, chars: str) -> str:
    c = self.peek()
    if not c or c not in chars:
      raise self.error("expected " + " or ".join(repr(x) for x in chars) + (f", got {c!r}" if c else ", got the end"))
    self.pos += 1
    return c

  def value(self):
    """One JSON value, parsed by json's decoder once the window holds all of it."""
    self.peek()
    while True:
      try:
        value, end = _DECODER.raw_decode(self.buf, self.pos)
      except json.JSONDecodeError as e:
        # text cut at the window's edge fails there, or as a string never closed; other errors
        # are in the file (the window grows by doubling, so retries cost linear time)
        cut = e.pos >= len(self.buf) - 6 or e.msg.startswith("Unterminated string")
        if cut and len(self.buf) - self.pos > MAX_VALUE:
          raise DataError(f"{self.where}: a value longer than {MAX_VALUE >> 20} MiB at character "
                          f"{self.dropped + self.pos}; the file is damaged") from None
        if cut and self.more():
          continue
        raise self.error(e.msg) from None
      # a number close to the window's edge may go on in the next block ("1." parses as 1)
      if end + 32 < len(self.buf) or not self.more():
        self.pos = end
        return value


def walk_object(chunks: Iterable[bytes], lists: dict[str, Callable[[object], None]], where: str) -> set[str]:
  """Walk the JSON object whose UTF-8 bytes `chunks` yields.

  Args:
    chunks: the bytes, in blocks.
    lists: key -> callback called with each element of the top-level list under that key, in
      order. Other keys' values are parsed and dropped (lists element by element).
    where: how messages name the file.

  Returns the keys of `lists` whose values were lists. A DataError naming `where` for text that
  is not one JSON object (or not UTF-8), or a key of `lists` given twice.
  """
  text = _Text(chunks, where)
  text.expect("{")
  found: set[str] = set()
  seen: set[str] = set()
  if text.peek() == "}":
    text.pos += 1
  else:
    while True:
      if text.peek() != '"':
        raise text.error("expected a key")
      key = text.value()
      if key in lists and key in seen:
        raise DataError(f"{where}: the key {key!r} is given twice")
      seen.add(key)
      text.expect(":")
      if text.peek() == "[":
        text.pos += 1
        keep = lists.get(key)
        if keep is not None:
          found.add(key)
        if text.peek() == "]":
          text.pos += 1
        else:
          while True:
            element = text.value()
            if keep is not None:
              keep(element)
            if text.expect(",]") == "]":
              break
      else:
        text.value()
      if text.expect(",}") == "}":
        break
  if text.peek():
    raise text.error("text after the object")
  return found
