"""CLIP's byte-level BPE tokenizer, without torch: text -> (N, context_length) int32 token ids.

References:
  Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML
    2021, Sec. 2.4 (a lower-cased byte pair encoding with a 49,152-entry vocabulary; the text is
    bracketed with [SOS] and [EOS], and the features at [EOS] represent it).
  Sennrich, Haddow & Birch, "Neural Machine Translation of Rare Words with Subword Units", ACL
    2016 (BPE); Radford et al., "Language Models are Unsupervised Multitask Learners", 2019 (GPT-2's
    byte-level variant: the 256 byte values are mapped to printable characters first).
  openai/CLIP `clip/simple_tokenizer.py` and mlfoundations/open_clip `tokenizer.py` (the same
    algorithm; open_clip adds truncation to the context length with <end_of_text> kept last).

The ids are those of open_clip's `tokenize` (tests/test_clip.py compares them):
  vocabulary  the 256 byte characters, the same 256 with "</w>" (end of word) appended, one entry
              per merge rule (48,894 of them, the first lines of the vocabulary file after its
              header), then <start_of_text> (49406) and <end_of_text> (49407): 49,408 ids;
  cleaning    ftfy.fix_text, HTML entities unescaped twice, runs of whitespace collapsed to one
              space, stripped, lower-cased;
  words       the regex below (letters runs, single digits, runs of other non-space characters,
              English contractions, and the two special tokens spelled out);
  BPE         each word, as byte characters with "</w>" on its last one, merges its adjacent pair
              of lowest merge rank until no adjacent pair is a rule;
  layout      [<start_of_text>, ids..., <end_of_text>, 0, 0, ...]; a text longer than the context
              is cut to context_length ids and its last id replaced by <end_of_text>.

The merge rules come from `bpe_simple_vocab_16e6.txt.gz`, which ships inside the open_clip package
(and OpenAI's `clip` package). It is found without importing those packages (they import torch);
`vocab=PATH` names a copy explicitly.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib
import importlib.util
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np

from jxhash.errors import UserError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
# 49152 BPE entries in CLIP's vocabulary, less the 256 byte tokens and the 2 special tokens.
NUM_MERGES = 49152 - 256 - 2
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
END_OF_WORD = "</w>"
CONTEXT_LENGTH = 77

# Word pieces: the special tokens as written, English contractions, a run of letters, ONE digit
# (numbers are split digit by digit), or a run of what is neither space, letter nor digit.
_WORD_PATTERN = (r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d"
                 r"|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+")


def _require(module: str):
  """Import ftfy / regex, or one line saying how to install them (the `clip` extra)."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise UserError(f"CLIP's tokenizer needs the {module} package: pip install 'jxhash[clip]' "
                    f"(or pip install ftfy regex)") from None


@functools.lru_cache(maxsize=1)
def byte_characters() -> tuple[str, ...]:
  """The printable character standing for each byte value 0..255 (GPT-2's reversible table).

  Bytes that are printable Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
  themselves; the other 68 (control characters, space, soft hyphen ...) take the characters
  chr(256), chr(257), ... in byte order, so no token contains whitespace or control characters.
  """
  printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) \
      | set(range(ord("®"), ord("ÿ") + 1))
  table = []
  extra = 0
  for byte in range(256):
    if byte in printable:
      table.append(chr(byte))
    else:
      table.append(chr(256 + extra))
      extra += 1
  return tuple(table)


def _byte_order() -> list[int]:
  """Byte values in vocabulary order: the printable ones first (ascending), then the rest."""
  table = byte_characters()
  return sorted(range(256), key=lambda b: (ord(table[b]) >= 256, ord(table[b])))


def find_vocab(vocab: str | os.PathLike | None = None) -> pathlib.Path:
  """The BPE vocabulary file: `vocab` if given, else the copy shipped with open_clip or OpenAI's clip.

  The packages are located with importlib.util.find_spec, which does not import them (and so does
  not import torch).
  """
  if vocab is not None:
    path = pathlib.Path(vocab)
    if not path.is_file():
      raise UserError(f"CLIP vocabulary file {path} does not exist (expected {VOCAB_FILE})")
    return path
  for package in ("open_clip", "clip"):
    try:
      spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
      spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
      path = pathlib.Path(location) / VOCAB_FILE
      if path.is_file():
        return path
  raise UserError(f"CLIP's BPE vocabulary {VOCAB_FILE} was not found: install open-clip-torch "
                  f"(`pip install open-clip-torch`, it ships the file) or pass vocab=PATH to a copy")


def _read_merges(path: pathlib.Path) -> list[tuple[str, str]]:
  try:
    with gzip.open(path, "rt", encoding="utf-8") as f:
      lines = f.read().split("\n")
  except (OSError, EOFError, UnicodeDecodeError) as e:
    raise UserError(f"CLIP vocabulary file {path} is unreadable: {e}") from None
  # The first line is a version header; CLIP uses the next NUM_MERGES rules and ignores the rest.
  rules = lines[1:1 + NUM_MERGES]
  merges = []
  for number, line in enumerate(rules, start=2):
    pair = line.split()
    if len(pair) != 2:
      raise UserError(f"CLIP vocabulary file {path}, line {number}: expected a merge rule of two "
                      f"symbols, found {line[:60]!r}")
    merges.append((pair[0], pair[1]))
  if len(merges) != NUM_MERGES:
    raise UserError(f"CLIP vocabulary file {path} holds {len(merges)} merge rules, expected {NUM_MERGES}")
  return merges


class ClipTokenizer:
  """CLIP's tokenizer over one vocabulary file; `__call__` gives open_clip's `tokenize` layout.

  Attributes:
    encoder: token string -> id (49,408 entries for CLIP's file).
    sot_id, eot_id: ids of <start_of_text> and <end_of_text>.
  """

  def __init__(self, vocab: str | os.PathLike | None = None, cache_size: int = 65536):
    regex = _require("regex")  # the \p{L} / \p{N} classes; the standard re module has none
    self._ftfy = _require("ftfy")
    self.path = find_vocab(vocab)
    merges = _read_merges(self.path)
    table = byte_characters()
    symbols = [table[b] for b in _byte_order()]
    tokens = symbols + [s + END_OF_WORD for s in symbols] + [a + b for a, b in merges]
    tokens += [START_OF_TEXT, END_OF_TEXT]
    self.encoder = {token: i for i, token in enumerate(tokens)}
    self.decoder = tokens
    # A later duplicate rule would take the later rank in CLIP's dict; keep the same behaviour.
    self.ranks = {pair: rank for rank, pair in enumerate(merges)}
    self.sot_id = self.encoder[START_OF_TEXT]
    self.eot_id = self.encoder[END_OF_TEXT]
    self.vocab_size = len(tokens)
    self._pattern = regex.compile(_WORD_PATTERN, regex.IGNORECASE)
    self._bpe = functools.lru_cache(maxsize=cache_size)(self._bpe_uncached)

  def _bpe_uncached(self, word: str) -> tuple[int, ...]:
    """Ids of one word (already in byte characters) after BPE."""
    if word in (START_OF_TEXT, END_OF_TEXT):
      return (self.encoder[word],)
    parts = list(word[:-1]) + [word[-1] + END_OF_WORD]
    while len(parts) > 1:
      best = min(range(len(parts) - 1), key=lambda i: self.ranks.get((parts[i], parts[i + 1]), NUM_MERGES))
      pair = (parts[best], parts[best + 1])
      if pair not in self.ranks:
        break
      # Merge every occurrence of the pair, scanning left to right without overlaps.
      merged = []
      i = 0
      while i < len(parts):
        if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
          merged.append(parts[i] + parts[i + 1])
          i += 2
        else:
          merged.append(parts[i])
          i += 1
      parts = merged
    return tuple(self.encoder[p] for p in parts)

  def clean(self, text: str) -> str:
    """CLIP's text cleaning: ftfy, HTML entities (twice), whitespace collapsed, lower case."""
    text = html.unescape(html.unescape(self._ftfy.fix_text(text)))
    return " ".join(text.split()).lower()

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without <start_of_text> / <end_of_text> and without truncation."""
    if not isinstance(text, str):
      raise UserError(f"CLIP tokenizer: expected a str, got {type(text).__name__}")
    table = byte_characters()
    ids: list[int] = []
    for word in self._pattern.findall(self.clean(text)):
      ids.extend(self._bpe("".join(table[b] for b in word.encode("utf-8"))))
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    """Text of token ids (special tokens spelled out, "</w>" as a space); for inspection."""
    to_byte = {c: b for b, c in enumerate(byte_characters())}
    # Every character of a token, "</w>" and the special tokens included, is a byte character.
    text = bytes(to_byte[c] for c in "".join(self.decoder[int(i)] for i in ids))
    return text.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

  def __call__(self, texts: Sequence[str] | str, context_length: int = CONTEXT_LENGTH) -> np.ndarray:
    """(N, context_length) int32 ids: <start_of_text>, the text, <end_of_text>, zero padding."""
    if isinstance(texts, str):
      texts = [texts]
    if context_length < 2:
      raise UserError(f"CLIP tokenizer: context_length must be at least 2, got {context_length}")
    out = np.zeros((len(texts), context_length), np.int32)
    for row, text in enumerate(texts):
      ids = [self.sot_id] + self.encode(text) + [self.eot_id]
      if len(ids) > context_length:
        ids = ids[:context_length - 1] + [self.eot_id]
      out[row, :len(ids)] = ids
    return out


@functools.lru_cache(maxsize=4)
def _tokenizer(vocab: str | None) -> ClipTokenizer:
  return ClipTokenizer(vocab)


def get_tokenizer(vocab: str | os.PathLike | None = None) -> ClipTokenizer:
  """A shared ClipTokenizer for `vocab` (None: the file shipped with open_clip), built once."""
  return _tokenizer(None if vocab is None else os.fspath(vocab))


def tokenize(texts: Sequence[str] | str, context_length: int = CONTEXT_LENGTH,
             vocab: str | os.PathLike | None = None) -> np.ndarray:
  """open_clip's `tokenize` without torch: (N, context_length) int32 ids, zero-padded."""
  return get_tokenizer(vocab)(texts, context_length)
