"""Saving and loading `HashIndex` files: one .npz (no pickle), read defensively.

File layout (format "jxhash.HashIndex", version 1): an uncompressed zip (`np.savez`) of three
.npy members --
  header.npy  uint8 (L,): UTF-8 JSON {"format", "version", "bits", "size", "words", "metadata"}
  codes.npy   <u8 (size, words): packed codes, `jxhash.codes` bit order, pad bits 0
  ids.npy     <i8 (size,): the ids, in insertion order

Index files may come from elsewhere, so `load` trusts nothing it has not checked, and checks
the cheap things first: the zip directory and each member's .npy header are read (a few KB)
and every declared size is checked against the file size, the JSON header and the memory
actually available *before* a large member is read. So a truncated, corrupt or hostile file --
a member that claims more bytes than the file holds, a 2 MB member that would inflate to 2 GB,
a JSON header nested 200,000 brackets deep -- is one `UserError` naming the file and the
problem, within a second and a few MB of memory, never a MemoryError or RecursionError.

FAISS binary index files are recognised by their first bytes and handed to `faiss_io`.
"""

from __future__ import annotations

import json
import pathlib
import re
import zipfile
import zlib

import numpy as np

from jxhash import fileio
from jxhash.errors import UserError

FORMAT = "jxhash.HashIndex"
VERSION = 1
INDEX_FILE = "index.npz"  # the file name used when `save`/`load` are given a directory
MEMBERS = ("header.npy", "codes.npy", "ids.npy")
HEADER_LIMIT = 1 << 20  # bytes of JSON header (metadata is a few hundred bytes in practice)
MAX_DEPTH = 64  # nesting of the JSON header
# Deflate can shrink a run of zeros ~1000x; real codes and ids shrink < 10x (random codes ~1x,
# 24 repeated prototypes 8.6x, ids 0..N-1 5.3x), so a member claiming more is refused unread.
MAX_INFLATION = 200
_READ_STEP = 1 << 24  # bytes read from a member at a time
_ZIP_MAGIC = b"PK\x03\x04"
_NPY_HEADER_ROOM = 128  # the .npy header np.savez puts before the JSON bytes (64 or 128 bytes)


def target_path(path) -> pathlib.Path:
  """The user's path resolved (fileio.resolve); a directory means the index.npz inside it."""
  target = fileio.resolve(fileio.user_path(path, "HashIndex path"))
  return target / INDEX_FILE if target.is_dir() else target


def save(index, path) -> pathlib.Path:
  """Writes `index` to one .npz file atomically (fileio.atomic_output); returns the path."""
  from jxhash.index.flat import checked_metadata
  given = fileio.user_path(path, "HashIndex path").expanduser()
  # never through a link at the file itself (a linked directory is only where it goes)
  target = fileio.resolve(fileio.refuse_link(given / INDEX_FILE if given.is_dir() else given, "HashIndex file"))
  header = {
      "format": FORMAT,
      "version": VERSION,
      "bits": index.bits,
      "size": len(index),
      "words": index.packed_codes.shape[1],
      "metadata": checked_metadata(index.metadata, "HashIndex metadata"),
  }
  text = json.dumps(header)
  # what `load` would refuse is refused here, before anything is written
  _check_header_size(text, "HashIndex metadata", saving=True)
  arrays = {
      "header": np.frombuffer(text.encode(), np.uint8),
      "codes": np.ascontiguousarray(index.packed_codes).astype("<u8", copy=False),
      "ids": index.ids.astype("<i8", copy=False),
  }
  with fileio.atomic_output(target, what="index file") as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
  return target


def load(cls, path):
  """Reads a jxhash .npz index, or a FAISS binary index file; see the module docstring."""
  target = target_path(path)
  if not target.exists():
    raise UserError(f"no HashIndex file at {target}")
  if not target.is_file():
    raise UserError(f"{target} is not a regular file")
  try:
    with open(target, "rb") as f:
      magic = f.read(4)
  except OSError as e:
    raise UserError(f"cannot read HashIndex file {target}: {fileio.describe_os_error(e)}") from None
  from jxhash.index import faiss_io
  try:
    if faiss_io.is_faiss_magic(magic):
      return faiss_io.read(cls, target)
    if magic != _ZIP_MAGIC:
      raise UserError(f"{target} is not a HashIndex file (neither a jxhash .npz nor a FAISS binary index)")
    return _load_npz(cls, target)
  except MemoryError:
    raise UserError(f"{target}: not enough memory to load this index") from None


def _load_npz(cls, target: pathlib.Path):
  file_size = target.stat().st_size
  try:
    with zipfile.ZipFile(target) as archive:
      infos = {info.filename: info for info in archive.infolist()}
      missing = [name for name in MEMBERS if name not in infos]
      if missing:
        raise UserError(f"{target} is not a HashIndex file: missing {missing}")
      for name in MEMBERS:
        _check_member(target, infos[name], file_size)
      header = _read_header(target, archive, infos["header.npy"])
      bits, size, words = header["bits"], header["size"], header["words"]
      expected = {"codes.npy": (np.dtype("<u8"), (size, words)), "ids.npy": (np.dtype("<i8"), (size,))}
      opened = {name: _open_npy(target, archive, infos[name], *expected[name]) for name in expected}
      try:
        # Codes are read once and transposed to the word-major store (a second copy for W > 1).
        need = size * 8 * (words * (2 if words > 1 else 1) + 1)
        budget = memory_budget()
        if need > budget:
          raise UserError(f"{target}: loading {size:,} items needs {need / 2**30:.2f} GiB of memory, more than "
                          f"the {budget / 2**30:.2f} GiB available")
        codes = _read_data(target, opened["codes.npy"], expected["codes.npy"])
        ids = _read_data(target, opened["ids.npy"], expected["ids.npy"])
      finally:
        for stream in opened.values():
          stream.close()
  except UserError:
    raise
  except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError, NotImplementedError,
          RuntimeError) as e:
    raise UserError(f"cannot read HashIndex file {target} (truncated or corrupt?): {e}") from None
  if bits % 64 and size and (codes[:, -1] >> np.uint64(bits % 64)).any():
    raise UserError(f"{target}: corrupt codes: pad bits beyond bit {bits} are set")
  try:
    return cls.from_packed(bits, codes.astype(np.uint64, copy=False), ids, header["metadata"])
  except UserError as e:
    raise UserError(f"{target}: corrupt index: {e}") from None


def _check_member(target, info: zipfile.ZipInfo, file_size: int) -> None:
  """Declared sizes of one zip member against the file and the compression method."""
  name = info.filename
  if info.flag_bits & 0x1:
    raise UserError(f"{target}: member {name} is encrypted")
  if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
    raise UserError(f"{target}: member {name} uses zip compression method {info.compress_type}; "
                    "only stored and deflated members are read")
  if info.header_offset + info.compress_size > file_size:
    raise UserError(f"{target}: member {name} claims {info.compress_size:,} bytes at offset {info.header_offset:,} "
                    f"but the file holds {file_size:,} bytes (truncated?)")
  if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
    raise UserError(f"{target}: member {name} is stored uncompressed but declares {info.file_size:,} bytes "
                    f"for {info.compress_size:,} stored")
  if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > MAX_INFLATION * max(info.compress_size, 1):
    raise UserError(f"{target}: member {name} would inflate from {info.compress_size:,} to {info.file_size:,} bytes "
                    f"(over {MAX_INFLATION}x; a zip bomb?); refused unread. jxhash writes uncompressed members: "
                    "re-save the index with HashIndex.save")


def _open_npy(target, archive, info, dtype, shape):
  """Opens a member and checks its .npy header against the expected dtype, shape and size."""
  stream = archive.open(info)
  try:
    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0), (3, 0)):
      raise ValueError(f"unsupported .npy version {version}")
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    got_shape, fortran, got_dtype = reader(stream, max_header_size=10_000)
    if got_dtype != dtype or tuple(got_shape) != tuple(shape) or (fortran and len(shape) > 1):
      raise UserError(f"{target}: {info.filename} holds {got_dtype} {tuple(got_shape)}"
                      f"{' (Fortran order)' if fortran else ''}, expected {dtype} {tuple(shape)} from the header")
    data_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if stream.tell() + data_bytes != info.file_size:
      raise UserError(f"{target}: {info.filename} is {info.file_size:,} bytes, but its .npy header declares "
                      f"{stream.tell() + data_bytes:,} (truncated or padded?)")
  except BaseException:
    stream.close()
    raise
  return stream


def _read_data(target, stream, expected) -> np.ndarray:
  """Reads the data of an opened, checked member into a fresh array (CRC checked at the end)."""
  dtype, shape = expected
  out = np.empty(shape, dtype)
  view = memoryview(out.reshape(-1).view(np.uint8))
  done = 0
  while done < len(view):
    chunk = stream.read(min(_READ_STEP, len(view) - done))
    if not chunk:
      raise UserError(f"{target}: a member ends after {done:,} of {len(view):,} bytes (truncated?)")
    view[done:done + len(chunk)] = chunk
    done += len(chunk)
  stream.read(1)  # reaching the end makes zipfile compare the CRC
  return out


def _read_header(target, archive, info) -> dict:
  if info.file_size > HEADER_LIMIT:
    raise UserError(f"{target}: the JSON header is {info.file_size:,} bytes, more than the {HEADER_LIMIT:,} allowed")
  stream = archive.open(info)
  with stream:
    version = np.lib.format.read_magic(stream)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = reader(stream, max_header_size=10_000)
    if dtype != np.uint8 or len(shape) != 1 or stream.tell() + shape[0] != info.file_size:
      raise UserError(f"{target}: corrupt HashIndex header member ({dtype} {shape})")
    raw = stream.read(shape[0])
    stream.read(1)
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise UserError(f"{target}: corrupt HashIndex header: {e}") from None
  _check_header_size(text, f"{target}: corrupt HashIndex header:", saving=False)
  try:
    header = json.loads(text)
  except (json.JSONDecodeError, RecursionError) as e:
    raise UserError(f"{target}: corrupt HashIndex header: {e}") from None
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    found = header.get("format") if isinstance(header, dict) else type(header).__name__
    raise UserError(f"{target} is not a HashIndex file (header format {found!r})")
  if header.get("version") != VERSION:
    raise UserError(f"{target}: HashIndex format version {header.get('version')!r} is not supported (expected {VERSION})")
  bits, size, words = header.get("bits"), header.get("size"), header.get("words")
  if (not all(type(v) is int and v >= 0 for v in (bits, size, words)) or bits < 1
      or words != -(-bits // 64) or size >= 2**48):
    raise UserError(f"{target}: corrupt HashIndex header: bits={bits!r}, size={size!r}, words={words!r}")
  if not isinstance(header.get("metadata"), dict):
    raise UserError(f"{target}: corrupt HashIndex header: metadata is {type(header.get('metadata')).__name__}, "
                    "expected a dict")
  return header


def _check_header_size(text: str, what: str, *, saving: bool) -> None:
  """The JSON header's limits, the same for `save` and `load`: at most HEADER_LIMIT bytes in the
  .npy member and MAX_DEPTH levels of nesting (the header object itself is one level)."""
  depth = json_depth(text)
  if depth > MAX_DEPTH:
    if saving:
      raise UserError(f"{what} is nested {depth - 1} levels deep; an index file keeps at most {MAX_DEPTH - 1} "
                      "(load would refuse it): flatten it")
    raise UserError(f"{what} JSON nested {depth} levels deep (at most {MAX_DEPTH})")
  size = len(text.encode("utf-8")) + _NPY_HEADER_ROOM
  if saving and size > HEADER_LIMIT:
    most = HEADER_LIMIT - _NPY_HEADER_ROOM
    raise UserError(f"{what} takes {size:,} bytes as JSON; an index file keeps at most {most:,} (load would refuse "
                    "it): keep large data out of the metadata")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(text: str) -> int:
  """Deepest bracket nesting of a JSON text, counted without recursion (strings skipped)."""
  skeleton = np.frombuffer(_JSON_STRING.sub('""', text).encode("utf-8"), np.uint8)
  step = np.isin(skeleton, (ord("["), ord("{"))).astype(np.int32) - np.isin(skeleton, (ord("]"), ord("}")))
  return int(np.cumsum(step).max(initial=0))


def memory_budget() -> int:
  """Bytes a load may allocate: the kernel's MemAvailable (Linux), else the free physical pages."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    import os
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return 1 << 62  # unknown: no memory limit beyond the consistency checks
