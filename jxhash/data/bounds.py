"""Bounded reads: what an untrusted file declares is checked before anything is allocated for it.

A data file's headers say how large its arrays are; a damaged or hostile file can claim
anything (a 120-byte .npy declaring (1e11, 32) float64, an HDF5 dataset declared (300, 1e9) and
never written, a 2 MB zip member that inflates to 2 GB, a .mat variable whose data element
claims 4 GB). Before an array is read whole, `jxhash.data.io` checks here:

  - the declared size (shape × itemsize of the .npy header, of the .npy header inside a .npz
    member, of an HDF5 dataspace, of a MAT v5 variable header) against the memory budget
    `max_array_bytes()`;
  - where the data is stored uncompressed, against the bytes the file actually holds after
    the header (a .npy, a stored .npz member, a contiguous HDF5 dataset, an uncompressed MAT
    variable), so a truncated or forged file is refused before allocation, whatever the budget;
  - for a .npz member, the npy header inside it against the size the zip directory declares
    (zipfile never inflates past that size, so the check bounds the inflation);
  - for HDF5, storage that was declared but never written (a contiguous dataset with no
    storage, a chunked one with chunks missing) unless the writer set a fill value on purpose
    (a user-defined fill value), and data kept outside the file (external or virtual
    datasets), which is never followed;
  - for a MAT v5 variable, every data element jxhash lets scipy allocate against the declared
    shape and the variable's own size (a lying inner length is refused, not allocated).

The memory budget is per array: `JXHASH_MAX_ARRAY_BYTES` (bytes, or with a K/M/G/T suffix,
powers of 1024) if set, else half the machine's memory (the smaller of physical memory and
the cgroup limit). A compressed array inside the budget is read: it cannot be told from a
genuine one before inflating it (MIRFlickr's 222 MB tag matrix compresses 480:1), so a
compressed member of 2 GB is refused only where the budget is below 2 GB.

Every refusal is a `DataError` naming the file (and key) and the sizes involved.

Length (over 400 lines): the memory budget and one header check per container format (npy,
npz members, HDF5 datasets, and a MAT v5 parser that walks variable headers without
inflating them), each checking declared sizes before anything is allocated.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
import struct
import zipfile
import zlib

import numpy as np

from jxhash.errors import DataError

ENV_BUDGET = "JXHASH_MAX_ARRAY_BYTES"
BUDGET_FRACTION = 0.5
# Without a way to read the machine's memory.
FALLBACK_BUDGET = 4 << 30
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


# ---------------------------------------------------------------------------------------------
# The memory budget.


def format_bytes(n: int) -> str:
  """'1.5 GiB', '120 B': sizes in messages."""
  n = int(n)
  for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
    if n >= scale:
      return f"{n / scale:.1f} {unit}"
  return f"{n} B"


def parse_bytes(text: str, what: str = ENV_BUDGET) -> int:
  """Bytes from "1000000", "1e9", "512M", "8G", "8GiB" (K/M/G/T are powers of 1024)."""
  match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
  if not match:
    raise DataError(f"{what}={text!r}: expected a size in bytes, e.g. 8000000000 or 8G")
  value = float(match.group(1)) * _UNITS[match.group(2).lower()]
  if not math.isfinite(value) or value < 1:
    raise DataError(f"{what}={text!r}: the budget must be at least 1 byte")
  return int(value)


def _cgroup_limit() -> int | None:
  for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
      text = pathlib.Path(path).read_text().strip()
    except OSError:
      continue
    if text.isdigit() and int(text) < 1 << 60:  # v1 reports "no limit" as a huge number
      return int(text)
  return None


def machine_memory() -> int | None:
  """Bytes of memory this process may use: physical memory, or the cgroup limit if lower."""
  sizes = []
  try:
    sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
  except (ValueError, OSError, AttributeError):
    pass
  limit = _cgroup_limit()
  if limit:
    sizes.append(limit)
  sizes = [s for s in sizes if s and s > 0]
  return min(sizes) if sizes else None


def max_array_bytes() -> int:
  """The memory budget for one array read whole: `JXHASH_MAX_ARRAY_BYTES` if set, else half
  the machine's memory (`machine_memory`), else 4 GiB. Read at each check, so setting the
  variable takes effect at once."""
  text = os.environ.get(ENV_BUDGET)
  if text is not None and text.strip():
    return parse_bytes(text)
  memory = machine_memory()
  return int(memory * BUDGET_FRACTION) if memory else FALLBACK_BUDGET


def reason(e: BaseException, limit: int = 160) -> str:
  """"Type: message" of an exception for a one-line error: its first line, at most `limit` chars
  (a library's message may quote a whole forged header)."""
  text = str(e).strip().splitlines()[0] if str(e).strip() else ""
  if len(text) > limit:
    text = text[:limit] + "..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def describe(shape, dtype) -> str:
  return f"shape {tuple(int(s) for s in shape)} {np.dtype(dtype)}"


def check_budget(nbytes: int, where: str, what: str, *, hint: str = "") -> None:
  """A DataError if `nbytes` (what reading `what` would allocate) exceeds the budget."""
  budget = max_array_bytes()
  if nbytes > budget:
    raise DataError(f"{where}: {what} needs {format_bytes(nbytes)}, over the memory budget of "
                    f"{format_bytes(budget)}; set {ENV_BUDGET} higher if this machine has the memory"
                    + (f" ({hint})" if hint else ""))


def array_bytes(shape, dtype) -> int:
  # Python ints: a forged shape must not overflow into a small number.
  return math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize


# ---------------------------------------------------------------------------------------------
# .npy and .npz


@dataclasses.dataclass(frozen=True)
class NpyHeader:
  shape: tuple
  fortran_order: bool
  dtype: np.dtype
  offset: int  # bytes before the data

  @property
  def nbytes(self) -> int:
    return array_bytes(self.shape, self.dtype)


def read_npy_header(f, where: str) -> NpyHeader:
  """The header of the .npy stream `f` (positioned at its start); `f` is left after it."""
  try:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
      # 3.0 differs only in allowing UTF-8 field names, which numeric arrays do not have.
      shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
      raise DataError(f"{where}: unsupported .npy format version {version}")
  except (ValueError, EOFError, SyntaxError, RecursionError, OSError, zlib.error) as e:
    raise DataError(f"{where}: not a readable .npy array ({reason(e)})") from e
  if any(int(s) < 0 for s in shape):
    raise DataError(f"{where}: the .npy header declares a negative dimension {shape}")
  if dtype.hasobject:
    raise DataError(f"{where}: holds Python objects ({dtype}), which jxhash never unpickles; save numbers")
  offset = f.tell()
  return NpyHeader(tuple(int(s) for s in shape), bool(fortran), dtype, offset)


def check_npy(path: pathlib.Path) -> NpyHeader:
  """The header of a .npy file whose declared data fits in the file (a caller reading it whole also
  checks the budget)."""
  size = path.stat().st_size
  with open(path, "rb") as f:
    header = read_npy_header(f, str(path))
  available = size - header.offset
  if header.nbytes > available:
    raise DataError(f"{path}: declares {describe(header.shape, header.dtype)} ({format_bytes(header.nbytes)}) "
                    f"but holds only {format_bytes(max(available, 0))} of data: truncated or not that array")
  return header


def npz_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
  """{key: member} as numpy names them ("x.npy" is key "x")."""
  return {info.filename[:-4] if info.filename.endswith(".npy") else info.filename: info
          for info in archive.infolist() if not info.is_dir()}


def check_npz_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, archive_size: int, where: str) -> NpyHeader:
  """Check a member's npy header against the member's declared size and the budget, inflating
  only the header (a few hundred bytes)."""
  if info.flag_bits & 0x1:
    raise DataError(f"{where}: the member is encrypted")
  if info.header_offset + info.compress_size > archive_size:
    raise DataError(f"{where}: the member's {format_bytes(info.compress_size)} lie past the end of the "
                    f"{format_bytes(archive_size)} archive: truncated")
  with archive.open(info) as member:
    header = read_npy_header(member, where)
  if header.offset + header.nbytes > info.file_size:
    raise DataError(f"{where}: declares {describe(header.shape, header.dtype)} ({format_bytes(header.nbytes)}) "
                    f"but the archive says the member holds {format_bytes(info.file_size)}: damaged or forged")
  check_budget(header.nbytes, where, describe(header.shape, header.dtype))
  return header


# ---------------------------------------------------------------------------------------------
# HDF5 (and MATLAB v7.3)


def check_hdf5_dataset(dataset, path: pathlib.Path, where: str, *, whole: bool = True) -> int:
  """Refuse a dataset whose storage cannot hold what it declares; returns its declared bytes.

  Args:
    dataset: an open h5py.Dataset.
    path: its file (for the truncation check).
    whole: it is about to be read whole, so the budget applies too (not for lazy rows).
  """
  import h5py

  declared = array_bytes(dataset.shape, dataset.dtype)
  plist = dataset.id.get_create_plist()
  layout = plist.get_layout()
  if layout == h5py.h5d.VIRTUAL or plist.get_external_count() > 0:
    raise DataError(f"{where}: keeps its data outside the file (an external or virtual dataset), which jxhash "
                    "does not follow; copy the data into the file")
  # A fill value set on purpose (h5py's fillvalue=) makes unwritten storage mean that value.
  intended_fill = plist.fill_value_defined() == h5py.h5d.FILL_VALUE_USER_DEFINED
  what = f"{describe(dataset.shape, dataset.dtype)} ({format_bytes(declared)})"
  if declared and layout == h5py.h5d.CONTIGUOUS:
    stored = dataset.id.get_storage_size()
    if stored < declared and not intended_fill:
      raise DataError(f"{where}: declares {what} but only {format_bytes(stored)} are stored: never written "
                      "(it would read as zeros) or damaged")
    offset = dataset.id.get_offset()
    size = path.stat().st_size
    if offset is not None and offset + declared > size:
      raise DataError(f"{where}: its {format_bytes(declared)} of data start at byte {offset} but the file ends at "
                      f"{size}: truncated")
  elif declared and layout == h5py.h5d.CHUNKED and not intended_fill:
    expected = math.prod(-(-int(s) // int(c)) for s, c in zip(dataset.shape, dataset.chunks))
    written = dataset.id.get_num_chunks()
    if written < expected:
      raise DataError(f"{where}: declares {what} but only {written} of its {expected} chunks were written "
                      "(the rest would read as zeros)")
  if whole:
    check_budget(declared, where, describe(dataset.shape, dataset.dtype))
  return declared


# ---------------------------------------------------------------------------------------------
# MATLAB v5 .mat: the variable headers, read without scipy's allocations.

_MI_MATRIX, _MI_COMPRESSED = 14, 15
# Bytes per element of each MAT data type (miINT8 ... miUTF32).
_MI_SIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8, 16: 1, 17: 2, 18: 4}
_CLASSES = {1: "cell", 2: "struct", 3: "object", 4: "char", 5: "sparse", 6: "double", 7: "single", 8: "int8",
            9: "uint8", 10: "int16", 11: "uint16", 12: "int32", 13: "uint32", 14: "int64", 15: "uint64",
            16: "function", 17: "opaque"}
# Bytes per element once scipy has read a variable of that class (char becomes numpy's 4-byte str,
# a sparse matrix is densified to float64).
CLASS_ITEMSIZE = {"double": 8, "single": 4, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4,
                  "uint32": 4, "int64": 8, "uint64": 8, "logical": 1, "char": 4, "sparse": 8}
_MAX_DIMS = 32
_MAX_NAME = 4096


@dataclasses.dataclass(frozen=True)
class MatVariable:
  """One variable of a MAT v5 file as its header declares it.

  mclass: "double", ..., "logical", "char", "sparse", "cell", "struct", ...
  payload: bytes of its matrix element once inflated; stored: bytes it takes in the file.
  """

  name: str
  shape: tuple
  mclass: str
  is_complex: bool
  compressed: bool
  stored: int
  payload: int

  @property
  def nbytes(self) -> int:
    """Bytes scipy allocates for it once read (densified for sparse)."""
    return math.prod(self.shape) * CLASS_ITEMSIZE.get(self.mclass, 8)


class _Short(Exception):
  """A variable's bytes end before what its header declares."""


class _Plain:
  """The bytes of an uncompressed variable, bounded by its declared length."""

  def __init__(self, f, length: int):
    self.f, self.left = f, length

  def read(self, n: int) -> bytes:
    if n > self.left:
      raise _Short
    data = self.f.read(n)
    if len(data) < n:
      raise _Short
    self.left -= n
    return data

  def skip(self, n: int) -> None:
    if n > self.left:
      raise _Short
    self.f.seek(n, os.SEEK_CUR)
    self.left -= n


class _Inflated:
  """The inflated bytes of a compressed variable, produced only as far as they are read, and
  never more than 64 KiB at a time (skipping discards them)."""

  def __init__(self, f, length: int):
    self.f, self.left = f, length
    self.z = zlib.decompressobj()
    self.limit = 8  # the inner tag; then its declared payload (`bound`)

  def bound(self, payload: int) -> None:
    self.limit = payload

  def _produce(self, want: int) -> bytes:
    want = min(want, self.limit)
    out, got = [], 0
    while got < want and not self.z.eof:
      data = self.z.unconsumed_tail
      if not data and self.left > 0:
        data = self.f.read(min(1 << 16, self.left))
        self.left = self.left - len(data) if data else 0
      chunk = self.z.decompress(data, want - got)
      if chunk:
        out.append(chunk)
        got += len(chunk)
      elif not data:
        break
    self.limit -= got
    return b"".join(out)

  def read(self, n: int) -> bytes:
    data = self._produce(n)
    if len(data) < n:
      raise _Short
    return data

  def skip(self, n: int) -> None:
    while n > 0:
      chunk = self._produce(min(n, 1 << 16))
      if not chunk:
        raise _Short
      n -= len(chunk)


def _tag(stream, order: str) -> tuple[int, int, bytes | None]:
  """(type, byte count, inline data or None) of the next data element."""
  raw = stream.read(8)
  mdtype, nbytes = struct.unpack(order + "II", raw)
  if mdtype >> 16:  # small data element: type and count share 4 bytes, data in the other 4
    count = mdtype >> 16
    if count > 4:
      raise _Short
    return mdtype & 0xFFFF, count, raw[4:4 + count]
  return mdtype, nbytes, None


def _element(stream, order: str, limit: int) -> tuple[int, int, bytes]:
  """(type, byte count, data) of a small subelement (at most `limit` bytes), padding skipped."""
  mdtype, nbytes, inline = _tag(stream, order)
  if inline is not None:
    return mdtype, nbytes, inline
  if nbytes > limit:
    raise _Short
  data = stream.read(nbytes)
  stream.skip(-nbytes % 8)
  return mdtype, nbytes, data


def _check_element(stream, order: str, most: int, where: str, name: str, *, skip: bool) -> None:
  """Check that the next data element's byte count is at most `most` (what the declared shape
  allows; scipy allocates that count before reading it), and skip it if `skip`."""
  _, nbytes, inline = _tag(stream, order)
  if inline is not None:
    return
  if nbytes > most:
    raise DataError(f"{where} [{name}]: holds a {format_bytes(nbytes)} data element but its declared shape "
                    f"allows {format_bytes(most)}: damaged or forged")
  if skip:
    stream.skip(nbytes + (-nbytes % 8))


def _matrix(stream, order: str, payload: int, *, compressed: bool, stored: int, where: str) -> MatVariable:
  if payload == 0:  # an empty matrix element (MATLAB writes these for [])
    return MatVariable("", (0, 0), "double", False, compressed, stored, 0)
  _, _, flags = _element(stream, order, 8)
  word, nzmax = struct.unpack(order + "II", flags[:8].ljust(8, b"\0"))
  mclass = _CLASSES.get(word & 0xFF, f"class {word & 0xFF}")
  if (word >> 8) & 0x02:
    mclass = "logical"
  is_complex = bool((word >> 8) & 0x08)
  _, nbytes, dims = _element(stream, order, 4 * _MAX_DIMS)
  shape = struct.unpack(order + f"{nbytes // 4}i", dims[:nbytes // 4 * 4])
  _, _, name_bytes = _element(stream, order, _MAX_NAME)
  name = name_bytes.decode("latin1")
  if any(s < 0 for s in shape):
    raise DataError(f"{where} [{name}]: declares a negative dimension {shape}")
  var = MatVariable(name, tuple(shape), mclass, is_complex, compressed, stored, payload)
  count = math.prod(shape)
  # The data elements scipy will allocate: each must fit the declared shape (at 8 bytes, the
  # widest element type, per value) and the variable (the streams end at its payload). Complex
  # variables are refused before reading, so only the real part matters.
  if mclass in CLASS_ITEMSIZE and mclass != "sparse":
    _check_element(stream, order, count * 8, where, name, skip=False)
  elif mclass == "sparse":
    columns = shape[1] if len(shape) > 1 else 1
    entries = max(int(nzmax), 1)
    for i, most in enumerate((entries * 8, (columns + 1) * 8, entries * 8)):
      _check_element(stream, order, most, where, name, skip=i < 2)
  return var


def _variable_where(f, path, order: str, mdtype: int, available: int, number: int) -> str:
  """"<path> [<name>]" of the variable whose tag was just read, if its header can be read from
  the `available` bytes left in the file; else "<path> (variable <number>)"."""
  try:
    if mdtype == _MI_COMPRESSED:
      stream = _Inflated(f, available)
      _tag(stream, order)
      stream.bound(available * 1024)
    else:
      stream = _Plain(f, available)
    name = _matrix(stream, order, available, compressed=False, stored=0, where=str(path)).name
  except (_Short, DataError, zlib.error, struct.error):
    name = ""
  return f"{path} [{name}]" if name else f"{path} (variable {number})"


def mat5_variables(path: pathlib.Path) -> list[MatVariable]:
  """The variables of a MATLAB v5 file, from their headers; inflates only headers (and sparse
  variables' index arrays, to check their lengths), never allocating what they declare."""
  size = path.stat().st_size
  out = []
  with open(path, "rb") as f:
    header = f.read(128)
    if len(header) < 128:
      raise DataError(f"{path}: too short for a MAT file ({size} bytes): truncated")
    indicator = header[126:128]
    if indicator not in (b"IM", b"MI"):
      raise DataError(f"{path}: not a MATLAB v5 file (no endian indicator in its header)")
    order = "<" if indicator == b"IM" else ">"
    position = 128
    while position + 8 <= size:
      f.seek(position)
      mdtype, nbytes = struct.unpack(order + "II", f.read(8))
      end = position + 8 + nbytes
      number = len(out) + 1
      if end > size:
        raise DataError(f"{_variable_where(f, path, order, mdtype, size - position - 8, number)}: declares "
                        f"{format_bytes(nbytes)} but the file ends {format_bytes(size - position - 8)} later: "
                        "truncated")
      try:
        if mdtype == _MI_COMPRESSED:
          stream = _Inflated(f, nbytes)
          inner, payload, _ = _tag(stream, order)
          if inner != _MI_MATRIX:
            raise DataError(f"{path}: compressed variable {number} does not hold a matrix (type {inner}): damaged")
          stream.bound(payload)
          out.append(_matrix(stream, order, payload, compressed=True, stored=8 + nbytes, where=str(path)))
        elif mdtype == _MI_MATRIX:
          out.append(_matrix(_Plain(f, nbytes), order, nbytes, compressed=False, stored=8 + nbytes,
                             where=str(path)))
        else:
          raise DataError(f"{path}: byte {position} holds data element type {mdtype}, not a variable: damaged")
      except _Short:
        raise DataError(f"{path}: variable {number} ends before what its header declares: truncated or "
                        "damaged") from None
      except (zlib.error, struct.error) as e:
        raise DataError(f"{path}: variable {number} cannot be read ({reason(e)}): damaged") from e
      position = end
  return out


def check_mat5_variable(var: MatVariable, where: str) -> None:
  """Refuse a variable scipy should not be asked to read: not numeric, or over the budget."""
  if var.mclass not in CLASS_ITEMSIZE:
    raise DataError(f"{where}: holds a MATLAB {var.mclass} array, not a numeric matrix")
  if var.is_complex:
    raise DataError(f"{where}: holds complex numbers; expected a real numeric matrix")
  check_budget(max(var.nbytes, var.payload), where, f"a {'x'.join(map(str, var.shape))} {var.mclass} variable")


__all__ = ["ENV_BUDGET", "MatVariable", "NpyHeader", "array_bytes", "check_budget", "check_hdf5_dataset",
           "check_mat5_variable", "check_npy", "check_npz_member", "format_bytes", "machine_memory", "reason",
           "mat5_variables", "max_array_bytes", "npz_members", "parse_bytes", "read_npy_header"]
