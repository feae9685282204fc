"""Read named matrices from the file formats cross-modal hashing releases ship in.

Formats:
  .npy                 one array (the key is ignored).
  .npz                 arrays by key.
  .mat (MATLAB v4/v5)  variables by name, via `scipy.io.loadmat` (sparse variables are densified).
  .mat v7.3, .h5       HDF5 datasets by name, via h5py. A file is taken as HDF5 when it carries
                       the HDF5 signature (at byte 0, 512, 1024, ...), whatever its extension.

MATLAB writes column-major arrays, so in HDF5 an N×D MATLAB matrix appears as D×N and an
H×W×3×N image stack as N×3×W×H. Datasets of a MATLAB file (the "MATLAB 7.3 MAT-file" header or
a `MATLAB_class` attribute) get their axes reversed back to MATLAB's order; a plain HDF5 file
written from numpy is read as stored.

Every problem becomes a `DataError` naming the file (and key): a missing file (with the loader's
hint on what to download and where to put it), a missing key (listing the keys present), an
unreadable or truncated file, a non-numeric array. What a file declares (shapes, member sizes,
stored bytes) is checked against the file and the memory budget before anything is allocated
(`declare`, with `jxhash.data.bounds` per format; the reading cost counts the reader's working
copies), and running out of memory while reading becomes a `DataError` naming the file too.

Length (over 400 lines): the readers of the release formats (npy/npz, MAT v5, HDF5 and
MAT v7.3), the one declared-size check every whole-array read goes through (`declare`, with
`check_declared` for a loader's files together), row streaming for pixels, and the shape/label
checks every loader shares, behind `read_matrix` / `open_rows`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import zipfile
import zlib

import h5py
import numpy as np
import scipy.io
import scipy.sparse
from scipy.io.matlab import MatReadError, matfile_version

from jxhash import fileio
from jxhash.data import bounds
from jxhash.data.core import RowSource
from jxhash.errors import DataError, UserError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# MATLAB classes that hold numbers; anything else (char, cell, struct, ...) is not a matrix.
MATLAB_NUMERIC = frozenset({"double", "single", "logical", "int8", "uint8", "int16", "uint16",
                            "int32", "uint32", "int64", "uint64"})
# What numpy, scipy and h5py raise on a damaged or foreign file; all mean "cannot read it".
# (RecursionError, from a header nested too deep to parse, is a RuntimeError.)
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, RuntimeError, IndexError,
               NotImplementedError, AttributeError, zlib.error, zipfile.BadZipFile, MatReadError)
_EXTENSIONS = (".npy", ".npz", ".mat", ".h5", ".hdf5")


@dataclasses.dataclass(frozen=True)
class Matrix:
  """An array and where it came from, so later checks can name the file and key."""

  array: np.ndarray
  path: pathlib.Path
  key: str | None = None

  @property
  def where(self) -> str:
    return f"{self.path} [{self.key}]" if self.key else str(self.path)

  @property
  def rows(self) -> int:
    return int(self.array.shape[0]) if self.array.ndim else 0


def split_spec(spec, base=None) -> tuple[pathlib.Path, str | None]:
  """Split "path" or "path:key" into (path, key); relative paths are taken under `base`.

  The colon only separates a key when what follows it has no path separator and the whole
  string is not itself an existing file (so "C:\\data\\x.mat" stays a path).
  """
  text = os.fspath(spec)
  path, key = text, None
  head, sep, tail = text.rpartition(":")
  if sep and head and tail and "/" not in tail and "\\" not in tail:
    if not _under(text, base).exists():
      path, key = head, tail
  return _under(path, base), key


def _under(path, base) -> pathlib.Path:
  p = pathlib.Path(path).expanduser()
  return p if base is None or p.is_absolute() else pathlib.Path(base) / p


def _file_path(path) -> pathlib.Path:
  """`path` as a Path, or a DataError if it is not a str / os.PathLike (never pathlib's TypeError)."""
  try:
    return fileio.user_path(path, "data file path")
  except UserError as e:
    raise DataError(str(e)) from None


def is_hdf5(path) -> bool:
  """Whether the file carries the HDF5 signature (MATLAB v7.3 puts it after a 512-byte header)."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= size:
      f.seek(offset)
      if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
        return True
      offset = 512 if offset == 0 else 2 * offset
  return False


def _has_matlab_header(path) -> bool:
  with open(path, "rb") as f:
    return f.read(6) == b"MATLAB"


def missing_file(path, hint: str = "") -> DataError:
  """The error for a file that is not there, with the loader's download hint."""
  message = f"{path}: file not found"
  return DataError(f"{message}. {hint}" if hint else message)


@dataclasses.dataclass(frozen=True)
class Declared:
  """What a file declares for one array, read from its headers alone (nothing inflated).

  Attributes:
    shape: in the order `read_matrix` returns it (MATLAB order for .mat files).
    dtype: the numpy dtype `read_matrix` returns before `_numeric` (float64 for sparse).
    path, key: the file and the array in it.
    peak: bytes reading it allocates at most, the result included: the format's working copies
      (scipy inflates a compressed MAT variable into a bytes buffer before building the array,
      then the column-major result is copied to row order; a sparse matrix is densified).
  """

  shape: tuple
  dtype: np.dtype
  path: pathlib.Path
  key: str | None
  peak: int

  @property
  def where(self) -> str:
    return f"{self.path} [{self.key}]" if self.key else str(self.path)

  @property
  def nbytes(self) -> int:
    return bounds.array_bytes(self.shape, self.dtype)


# numpy dtype of each MAT class once scipy has read it (char arrays are refused as non-numeric)
_MAT_DTYPES = {"double": np.float64, "single": np.float32, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
               "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
               "logical": np.uint8, "sparse": np.float64}


def declare(path, keys=None, *, hint: str = "") -> Declared:
  """The shape, dtype and reading cost of the array `read_matrix(path, keys)` would return, from
  the file's headers only, with every bounds check of `jxhash.data.bounds` (truncation, forged
  sizes, unwritten HDF5 storage, the memory budget) applied to the reading cost.

  This is the one "declared size" check every whole-array read goes through (`read_matrix`
  calls it first), and what loaders call to check several files against each other (row
  counts, widths, their total size) before reading any of them (`check_declared`).
  """
  path = _file_path(path)
  if not path.is_file():
    raise missing_file(path, hint)
  candidates = [keys] if isinstance(keys, str) else list(keys or ())
  suffix = path.suffix.lower()
  try:
    if suffix == ".npy":
      header = bounds.check_npy(path)
      out = Declared(header.shape, header.dtype, path, None, header.nbytes)
    elif suffix == ".npz":
      with zipfile.ZipFile(path) as archive:
        members = bounds.npz_members(archive)
        key = _pick(candidates, list(members), path)
        header = bounds.check_npz_member(archive, members[key], path.stat().st_size, f"{path} [{key}]")
      out = Declared(header.shape, header.dtype, path, key, header.nbytes)
    elif is_hdf5(path):
      with h5py.File(path, "r") as f:
        key = _pick(candidates, _hdf5_keys(f), path)
        out = _declare_hdf5(f[key], _has_matlab_header(path), path, key)
    elif suffix in (".mat", ""):
      out = _declare_mat(path, candidates)
    elif suffix in (".h5", ".hdf5"):
      raise DataError(f"{path}: not an HDF5 file (no HDF5 signature); it may be truncated or mislabelled")
    else:
      raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(_EXTENSIONS)}")
  except DataError:
    raise
  except READ_ERRORS as e:
    raise DataError(f"{path}: cannot read the file ({bounds.reason(e)}); it may be truncated "
                    "or damaged, download it again") from e
  if out.dtype.kind not in "biuf":
    raise DataError(f"{out.where}: holds {out.dtype} values, not numbers; expected a numeric matrix")
  what = bounds.describe(out.shape, out.dtype)
  if out.peak > out.nbytes:
    what = f"reading a {'x'.join(str(s) for s in out.shape)} {out.dtype} array, with the reader's working copies,"
  bounds.check_budget(out.peak, out.where, what)
  return out


def _declare_hdf5(node, matlab_file: bool, path: pathlib.Path, key: str) -> Declared:
  where = f"{path} [{key}]"
  cls = _matlab_class(node)
  if isinstance(node, h5py.Group):
    if "MATLAB_sparse" not in node.attrs:
      raise DataError(f"{where}: is a group (a MATLAB {cls or 'struct'}), not a numeric matrix")
    if "jc" not in node:
      raise DataError(f"{where}: a MATLAB sparse matrix without its column pointers 'jc'")
    parts = 0
    for part in ("jc", "ir", "data"):
      if part in node:
        _check_numeric_dataset(node[part], path, f"{where} {part}", whole=False)
        parts += bounds.array_bytes(node[part].shape, node[part].dtype)
    shape = (int(node.attrs["MATLAB_sparse"]), int(node["jc"].size) - 1)
    dtype = np.dtype(node["data"].dtype) if "data" in node else np.dtype(np.uint8)
    bounds.check_budget(bounds.array_bytes(shape, dtype), where, f"a {shape[0]}x{shape[1]} sparse matrix made dense")
    return Declared(shape, dtype, path, key, parts + 2 * bounds.array_bytes(shape, dtype))
  if cls is not None and cls not in MATLAB_NUMERIC:
    raise DataError(f"{where}: holds a MATLAB {cls} array, not a numeric matrix")
  if node.attrs.get("MATLAB_empty", 0):
    return Declared((0,), np.dtype(np.float64), path, key, 0)
  _check_numeric_dataset(node, path, where, whole=False)
  reverse = matlab_file or cls is not None
  shape = tuple(reversed(node.shape)) if reverse else tuple(node.shape)
  nbytes = bounds.array_bytes(shape, node.dtype)
  # a transposed 2-D array is copied into row order once read
  return Declared(shape, np.dtype(node.dtype), path, key, nbytes * (2 if reverse and len(shape) == 2 else 1))


def _declare_mat(path: pathlib.Path, candidates) -> Declared:
  major, listing = _mat_listing(path)
  if major == 1:
    key = _pick(candidates, [v.name for v in listing], path)
    var = next(v for v in listing if v.name == key)
    where = f"{path} [{key}]"
    bounds.check_mat5_variable(var, where)
    if var.mclass not in _MAT_DTYPES:
      raise DataError(f"{where}: holds a MATLAB {var.mclass} array, not a numeric matrix")
    if var.is_complex:
      raise DataError(f"{where}: holds complex numbers; expected a real numeric matrix")
    nbytes = math.prod(var.shape) * bounds.CLASS_ITEMSIZE.get(var.mclass, 8)
    # scipy holds the variable's whole inflated element, then the array, then a row-order copy
    return Declared(var.shape, np.dtype(_MAT_DTYPES[var.mclass]), path, key, var.payload + 2 * nbytes)
  key = _pick(candidates, [name for name, _, _ in listing], path)
  shape = next(tuple(shape) for name, shape, _ in listing if name == key)
  count = math.prod(shape)
  # v4 stores every element uncompressed, in at least one byte.
  if count > path.stat().st_size:
    raise DataError(f"{path} [{key}]: declares {count} values but the file holds {path.stat().st_size} bytes: "
                    "truncated")
  mclass = next(mclass for name, _, mclass in listing if name == key)
  bounds.check_budget(count * 8, f"{path} [{key}]", f"a {'x'.join(map(str, shape))} {mclass} variable")
  return Declared(shape, np.dtype(np.float64), path, key, 2 * count * 8)


def read_matrix(path, keys=None, *, hint: str = "") -> Matrix:
  """Read one numeric array from a .npy / .npz / .mat / .h5 file.

  Args:
    path: the file.
    keys: a name or a list of candidate names, the first present wins ("LAll", ["L_tr"]).
      None: the file must hold exactly one array. Ignored for .npy.
    hint: appended to the missing-file error (what to download and where to put it).

  Returns:
    Matrix with the array in MATLAB/numpy row order (rows = items for the usual N×D files);
    bool arrays become uint8, 2-D arrays C-contiguous (loadmat gives column-major ones).
  """
  path = _file_path(path)
  declare(path, keys, hint=hint)
  candidates = [keys] if isinstance(keys, str) else list(keys or ())
  suffix = path.suffix.lower()
  key = None
  try:
    if suffix == ".npy":
      header = bounds.check_npy(path)
      bounds.check_budget(header.nbytes, str(path), bounds.describe(header.shape, header.dtype))
      array = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
      array, key = _read_npz(path, candidates)
    elif is_hdf5(path):
      with h5py.File(path, "r") as f:
        key = _pick(candidates, _hdf5_keys(f), path)
        array = _read_hdf5(f[key], _has_matlab_header(path), f"{path} [{key}]", path)
    elif suffix in (".mat", ""):
      array, key = _read_mat(path, candidates)
    elif suffix in (".h5", ".hdf5"):
      raise DataError(f"{path}: not an HDF5 file (no HDF5 signature); it may be truncated or mislabelled")
    else:
      raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(_EXTENSIONS)}")
  except DataError:
    raise
  except MemoryError as e:
    where = f"{path} [{key}]" if key else str(path)
    raise DataError(f"{where}: not enough memory to read it; free memory, or set {bounds.ENV_BUDGET} to what "
                    "this machine can hold so that such arrays are refused before reading") from e
  except READ_ERRORS as e:
    raise DataError(f"{path}: cannot read the file ({bounds.reason(e)}); it may be truncated "
                    "or damaged, download it again") from e
  where = f"{path} [{key}]" if key else str(path)
  array = _numeric(np.asarray(array), where)
  # loadmat returns MATLAB's column-major layout; rows are what every consumer reads.
  return Matrix(np.ascontiguousarray(array) if array.ndim == 2 else array, path, key)


def _read_npz(path: pathlib.Path, candidates) -> tuple[np.ndarray, str]:
  """One array of a .npz, its member's npy header checked before the member is inflated."""
  with zipfile.ZipFile(path) as archive:
    members = bounds.npz_members(archive)
    key = _pick(candidates, list(members), path)
    info = members[key]
    bounds.check_npz_member(archive, info, path.stat().st_size, f"{path} [{key}]")
    with archive.open(info) as member:
      return np.lib.format.read_array(member, allow_pickle=False), key


def _mat_listing(path: pathlib.Path) -> tuple[int, list]:
  """(MAT major version, variables): `bounds.MatVariable`s for v5, whosmat triples for v4."""
  major, _ = matfile_version(path)
  if major == 1:
    return major, [v for v in bounds.mat5_variables(path) if v.name]
  if major == 0:
    return major, scipy.io.whosmat(path)
  raise DataError(f"{path}: MAT file version {major} is HDF5-based but has no HDF5 signature: damaged")


def _read_mat(path: pathlib.Path, candidates) -> tuple[np.ndarray, str]:
  """One variable of a MATLAB v4/v5 file; what its header declares is checked first."""
  major, listing = _mat_listing(path)
  if major == 1:
    key = _pick(candidates, [v.name for v in listing], path)
    bounds.check_mat5_variable(next(v for v in listing if v.name == key), f"{path} [{key}]")
  else:
    key = _pick(candidates, [name for name, _, _ in listing], path)
    shape, mclass = next((shape, mclass) for name, shape, mclass in listing if name == key)
    count = math.prod(shape)
    # v4 stores every element uncompressed, in at least one byte.
    if count > path.stat().st_size:
      raise DataError(f"{path} [{key}]: declares {count} values but the file holds {path.stat().st_size} bytes: "
                      "truncated")
    bounds.check_budget(count * 8, f"{path} [{key}]", f"a {'x'.join(map(str, shape))} {mclass} variable")
  array = scipy.io.loadmat(path, variable_names=[key])[key]
  if scipy.sparse.issparse(array):
    array = array.toarray()
  return array, key


def read_array(path, keys=None, *, hint: str = "") -> np.ndarray:
  """`read_matrix(...).array`."""
  return read_matrix(path, keys, hint=hint).array


def list_keys(path) -> list[str]:
  """Names of the arrays a .npz / .mat / .h5 file holds ([] for .npy)."""
  path = _file_path(path)
  if not path.is_file():
    raise missing_file(path)
  try:
    if path.suffix.lower() == ".npy":
      return []
    if path.suffix.lower() == ".npz":
      with zipfile.ZipFile(path) as archive:
        return list(bounds.npz_members(archive))
    if is_hdf5(path):
      with h5py.File(path, "r") as f:
        return _hdf5_keys(f)
    major, listing = _mat_listing(path)
    return [v.name for v in listing] if major == 1 else [name for name, _, _ in listing]
  except READ_ERRORS as e:
    raise DataError(f"{path}: cannot read the file ({bounds.reason(e)})") from e


def _pick(candidates, present, path) -> str:
  if not candidates:
    if len(present) == 1:
      return present[0]
    if not present:
      raise DataError(f"{path}: the file holds no arrays")
    raise DataError(f"{path}: the file holds several arrays {present}; name one (path:key or the key option)")
  for key in candidates:
    if key in present:
      return key
  wanted = " or ".join(repr(k) for k in candidates)
  raise DataError(f"{path}: no array named {wanted}; the file holds {present}")


def _hdf5_keys(f) -> list[str]:
  # MATLAB keeps cell/struct payloads under "#refs#" and "#subsystem#"; they are not variables.
  return [k for k in f.keys() if not k.startswith("#")]


def _matlab_class(node) -> str | None:
  value = node.attrs.get("MATLAB_class")
  if value is None:
    return None
  return value.decode() if isinstance(value, bytes) else str(value)


def _read_hdf5(node, matlab_file: bool, where: str, path: pathlib.Path) -> np.ndarray:
  cls = _matlab_class(node)
  if isinstance(node, h5py.Group):
    if "MATLAB_sparse" in node.attrs:
      # MATLAB v7.3 sparse: CSC parts data/ir/jc, the row count in the attribute.
      num_rows = int(node.attrs["MATLAB_sparse"])
      for part in ("jc", "ir", "data"):
        if part in node:
          _check_numeric_dataset(node[part], path, f"{where} {part}")
      if "jc" not in node:
        raise DataError(f"{where}: a MATLAB sparse matrix without its column pointers 'jc'")
      num_cols = int(node["jc"].size) - 1
      dtype = node["data"].dtype if "data" in node else np.dtype(np.uint8)
      bounds.check_budget(bounds.array_bytes((num_rows, num_cols), dtype), where,
                          f"a {num_rows}x{num_cols} sparse matrix made dense")
      jc = node["jc"][()]
      ir = node["ir"][()] if "ir" in node else np.zeros(0, np.int64)
      data = node["data"][()] if "data" in node else np.zeros(0, np.uint8)
      return scipy.sparse.csc_matrix((data, ir, jc), shape=(num_rows, jc.size - 1)).toarray()
    raise DataError(f"{where}: is a group (a MATLAB {cls or 'struct'}), not a numeric matrix")
  if cls is not None and cls not in MATLAB_NUMERIC:
    raise DataError(f"{where}: holds a MATLAB {cls} array, not a numeric matrix")
  if node.attrs.get("MATLAB_empty", 0):
    return np.zeros(0)
  _check_numeric_dataset(node, path, where)
  data = node[()]
  if matlab_file or cls is not None:
    data = data.transpose()
  return data if data.ndim > 2 else np.ascontiguousarray(data)


def _check_numeric_dataset(dataset, path: pathlib.Path, where: str, *, whole: bool = True) -> None:
  if not isinstance(dataset, h5py.Dataset):
    raise DataError(f"{where}: is a group, not an array")
  if dataset.dtype.kind not in "biuf":
    raise DataError(f"{where}: holds {dataset.dtype} values, not numbers; expected a numeric matrix")
  bounds.check_hdf5_dataset(dataset, path, where, whole=whole)


def _numeric(array: np.ndarray, where: str) -> np.ndarray:
  if array.dtype.kind == "b":
    return array.astype(np.uint8)
  if array.dtype.kind not in "iuf":
    raise DataError(f"{where}: holds {array.dtype} values, not numbers; expected a numeric matrix")
  return array


# ---------------------------------------------------------------------------------------------
# Lazy row access for arrays too large to load (pixel stacks).


class LazyRows(RowSource):
  """Rows of an on-disk array read on demand, presented as (N, ...) in memory order.

  `rows[idx]` (an int, slice or index array, any order, repeats allowed; see
  `core.RowSource`) reads only those items. Close it (or use `with`) to release the file.

  Attributes:
    shape: (N, ...) as the rows come out, e.g. (N, H, W, 3) for pixels.
    dtype: the stored dtype.
    path, key: the file and the array in it (key None for .npy); `where` joins them for messages.
  """

  def __init__(self, source, perm, path: pathlib.Path, key: str | None, closer=None):
    self._source = source
    self._perm = tuple(perm)
    self._row_axis = self._perm[0]
    self._closer = closer
    self.path, self.key = path, key
    self.where = f"{path} [{key}]" if key else str(path)
    self.shape = tuple(int(source.shape[a]) for a in self._perm)
    self.dtype = np.dtype(source.dtype)

  def _read_sorted(self, rows: np.ndarray) -> np.ndarray:
    # h5py reads only strictly increasing selections; a contiguous run is one hyperslab.
    select = [slice(None)] * len(self._perm)
    if rows[-1] - rows[0] + 1 == rows.size:
      select[self._row_axis] = slice(int(rows[0]), int(rows[-1]) + 1)
    else:
      select[self._row_axis] = rows
    try:
      block = np.asarray(self._source[tuple(select)])
    except MemoryError as e:
      raise DataError(f"{self.where}: not enough memory to read {rows.size} rows") from e
    except READ_ERRORS as e:
      raise DataError(f"{self.where}: cannot read rows {int(rows[0])}..{int(rows[-1])} ({bounds.reason(e)}); "
                      "the file may be truncated or damaged, download it again") from e
    return np.ascontiguousarray(block.transpose(self._perm))

  def identity(self) -> dict:
    """The file (resolved path, size, mtime_ns), the array in it and how it is read."""
    stat = self.path.stat()
    return {"file": str(self.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "key": self.key,
            "stored_shape": [int(s) for s in self._source.shape], "dtype": str(self.dtype), "axes": list(self._perm)}

  def close(self):
    if self._closer is not None:
      self._closer()
      self._closer = None


def open_rows(path, keys=None, *, pixels: bool = False, num_rows: int | None = None,
              hint: str = "") -> LazyRows:
  """Open a large array for reading rows on demand, without loading it.

  Args:
    path: a .npy (memory-mapped) or HDF5 / MATLAB v7.3 file.
    keys: dataset name or candidates, as in `read_matrix`.
    pixels: present a 4-D image stack as (N, H, W, 3) whatever its stored layout
      (see `pixel_layout`).
    num_rows: the expected N, used to tell the item axis from the others.
    hint: appended to the missing-file error.

  Returns:
    LazyRows; the caller closes it. Storage that cannot hold what the array declares (a short
    .npy, an HDF5 dataset never written) is refused here, not discovered as zeros mid-training.
  """
  path = _file_path(path)
  if not path.is_file():
    raise missing_file(path, hint)
  candidates = [keys] if isinstance(keys, str) else list(keys or ())
  closer = None
  try:
    if path.suffix.lower() == ".npy":
      bounds.check_npy(path)
      source, key, reverse = np.load(path, mmap_mode="r", allow_pickle=False), None, False
    elif is_hdf5(path):
      f = h5py.File(path, "r")
      closer = f.close
      key = _pick(candidates, _hdf5_keys(f), path)
      source = f[key]
      if not isinstance(source, h5py.Dataset):
        raise DataError(f"{path} [{key}]: is a group, not an array that can be read by rows")
      cls = _matlab_class(source)
      if cls is not None and cls not in MATLAB_NUMERIC:
        raise DataError(f"{path} [{key}]: holds a MATLAB {cls} array, not a numeric matrix")
      _check_numeric_dataset(source, path, f"{path} [{key}]", whole=False)
      reverse = _has_matlab_header(path) or cls is not None
    else:
      raise DataError(f"{path}: rows can only be read lazily from .npy or HDF5 / MATLAB v7.3 files; "
                      "load it whole with read_matrix or convert it")
    where = f"{path} [{key}]" if key else str(path)
    if source.dtype.kind not in "biuf":
      raise DataError(f"{where}: holds {source.dtype} values, not numbers; expected a numeric matrix")
    ndim = len(source.shape)
    # Axis i of the MATLAB-order array is stored as axis ndim-1-i in the file.
    logical_shape = tuple(reversed(source.shape)) if reverse else tuple(source.shape)
    order = pixel_layout(logical_shape, where, num_rows) if pixels else tuple(range(ndim))
  except BaseException as e:
    if closer is not None:
      closer()
    if isinstance(e, READ_ERRORS) and not isinstance(e, DataError):
      raise DataError(f"{path}: cannot read the file ({bounds.reason(e)}); it may be truncated "
                      "or damaged, download it again") from e
    raise
  perm = [ndim - 1 - a for a in order] if reverse else list(order)
  return LazyRows(source, perm, path, key, closer)


def read_pixels(path, keys=None, *, num_rows: int | None = None, hint: str = "",
                chunk: int = 512) -> Matrix:
  """Load a whole image stack as contiguous (N, H, W, 3) uint8.

  HDF5 / v7.3 and .npy stacks are copied chunk by chunk into the result, so the peak memory is
  the stack once (a full read followed by a transpose would hold it twice: ~6 GB for
  MIRFlickr's 3 GB of pixels), and the stack must fit the memory budget. Other formats are
  read whole.
  """
  path = _file_path(path)
  if path.is_file() and (path.suffix.lower() == ".npy" or is_hdf5(path)):
    with open_rows(path, keys, pixels=True, num_rows=num_rows, hint=hint) as rows:
      if rows.dtype != np.uint8:
        raise DataError(f"{rows.where}: pixel images must be uint8, got {rows.dtype}")
      bounds.check_budget(bounds.array_bytes(rows.shape, rows.dtype), rows.where,
                          bounds.describe(rows.shape, rows.dtype), hint="or stream_pixels=true to read batches")
      try:
        out = np.empty(rows.shape, np.uint8)
      except MemoryError as e:
        need = bounds.format_bytes(bounds.array_bytes(rows.shape, rows.dtype))
        raise DataError(f"{rows.where}: not enough memory for {need} of pixels; use stream_pixels=true") from e
      for start in range(0, len(rows), chunk):
        out[start:start + chunk] = rows[start:start + chunk]
    return Matrix(out, path, rows.key)
  return as_pixels(read_matrix(path, keys, hint=hint), num_rows)


# ---------------------------------------------------------------------------------------------
# Checks shared by the loaders; each names the file it complains about.


def pixel_layout(shape, where: str, num_rows: int | None = None) -> tuple[int, ...]:
  """The axis order that turns a 4-D image stack into (N, H, W, 3).

  Accepts N×H×W×3, N×3×H×W and H×W×3×N (MATLAB's usual stack, which DCMH-lineage v7.3 files
  hold). With `num_rows`, the item axis must have that size.
  """
  if len(shape) != 4:
    raise DataError(f"{where}: pixel images must be 4-D (N, H, W, 3), got shape {tuple(shape)}")
  for order in ((0, 1, 2, 3), (0, 2, 3, 1), (3, 0, 1, 2)):
    out = [shape[a] for a in order]
    if out[3] == 3 and (num_rows is None or out[0] == num_rows):
      return order
  expect = f" with {num_rows} items" if num_rows is not None else ""
  raise DataError(f"{where}: cannot read shape {tuple(shape)} as an (N, H, W, 3) image stack{expect}")


def as_pixels(matrix: Matrix, num_rows: int | None = None) -> Matrix:
  """The image stack of `matrix` as contiguous (N, H, W, 3) uint8."""
  order = pixel_layout(matrix.array.shape, matrix.where, num_rows)
  if matrix.array.dtype != np.uint8:
    raise DataError(f"{matrix.where}: pixel images must be uint8, got {matrix.array.dtype}")
  return dataclasses.replace(matrix, array=np.ascontiguousarray(matrix.array.transpose(order)))


def check_rows(*matrices: Matrix) -> int:
  """The common row count of paired matrices; a DataError naming both files if they differ."""
  first = matrices[0]
  for other in matrices[1:]:
    if other.rows != first.rows:
      message = (f"row counts disagree: {first.where} has {first.rows} rows but {other.where} has "
                 f"{other.rows}; row i of every file must be the same item")
      if other.array.ndim == 2 and other.array.shape[1] == first.rows:
        message += f" ({other.where} looks transposed: its columns match; store it items × features)"
      raise DataError(message)
  return first.rows


def check_declared(dataset: str, declared: dict) -> None:
  """Files a loader is about to read, checked against each other from their headers alone.

  Args:
    dataset: the dataset name, for messages.
    declared: {role: Declared} for "image", "text", "labels" (any subset; an image may be a
      4-D pixel stack, checked by `pixel_layout` once read).

  Refused, each naming the file: a matrix that is not 2-D or has no columns, row counts that
  differ, and arrays whose total size (plus the largest reader's working copies) is over the
  memory budget -- all before a byte of them is inflated.
  """
  rows = {}
  for role in sorted(declared, key=("labels", "text", "image").index):
    d = declared[role]
    if role == "image" and len(d.shape) == 4:
      continue
    if len(d.shape) != 2:
      raise DataError(f"{d.where}: {role} must be a 2-D matrix (items × columns), but the file declares shape "
                      f"{tuple(d.shape)}")
    if d.shape[1] == 0:
      raise DataError(f"{d.where}: {role} has 0 columns (shape {tuple(d.shape)}); every item needs at least one "
                      "value")
    rows[role] = d
  first = next(iter(rows.values()), None)
  for d in rows.values():
    if d.shape[0] != first.shape[0]:
      message = (f"row counts disagree: {first.where} has {first.shape[0]} rows but {d.where} has {d.shape[0]}; "
                 "row i of every file must be the same item")
      if d.shape[1] == first.shape[0]:
        message += f" ({d.where} looks transposed: its columns match; store it items × features)"
      raise DataError(message)
  total = sum(d.nbytes for d in declared.values())
  extra = max((d.peak - d.nbytes for d in declared.values()), default=0)
  budget = bounds.max_array_bytes()
  if total + extra > budget:
    sizes = ", ".join(f"{d.where} {bounds.format_bytes(d.nbytes)}" for d in declared.values())
    raise DataError(f"dataset {dataset!r}: its arrays need {bounds.format_bytes(total + extra)} together ({sizes}, "
                    f"plus the reader's working copies), over the memory budget of {bounds.format_bytes(budget)}; "
                    f"set {bounds.ENV_BUDGET} higher if this machine has the memory")


def check_matrix(matrix: Matrix, what: str) -> Matrix:
  """A 2-D feature matrix with at least one column and finite values; floats become float32
  (what the networks use)."""
  x = matrix.array
  if x.ndim != 2:
    raise DataError(f"{matrix.where}: {what} must be a 2-D matrix (items × features), got shape {x.shape}")
  if x.shape[1] == 0:
    raise DataError(f"{matrix.where}: {what} has 0 columns (shape {x.shape}); every item needs at least one feature")
  if x.dtype.kind == "f":
    bad = ~np.isfinite(x)
    if bad.any():
      row, col = (int(i) for i in np.argwhere(bad)[0])
      raise DataError(f"{matrix.where}: {what} has {int(bad.sum())} NaN or inf values (first at row {row}, "
                      f"column {col})")
    if x.dtype != np.float32:
      return dataclasses.replace(matrix, array=x.astype(np.float32))
  return matrix


def check_labels(matrix: Matrix) -> Matrix:
  """A 2-D multi-hot {0, 1} label matrix, as uint8."""
  x = matrix.array
  if x.ndim != 2:
    raise DataError(f"{matrix.where}: labels must be a 2-D multi-hot matrix (items × classes), got shape "
                    f"{x.shape}")
  if x.shape[1] == 0:
    raise DataError(f"{matrix.where}: labels have 0 columns (shape {x.shape}); every item needs at least one class")
  bad = (x != 0) & (x != 1)
  if bad.any():
    values = np.unique(x[bad])[:5].tolist()
    row = int(np.argwhere(bad)[0][0])
    raise DataError(f"{matrix.where}: labels must be 0/1 multi-hot, found values {values} (first at row {row})")
  return dataclasses.replace(matrix, array=x.astype(np.uint8))


def codes_to_onehot(matrix: Matrix, num_classes: int) -> Matrix:
  """Class codes 1..num_classes (a vector, N×1 or 1×N) as an N×num_classes one-hot matrix."""
  codes = matrix.array.reshape(-1)
  if codes.dtype.kind == "f" and not np.all(np.isfinite(codes) & (codes == np.round(codes))):
    raise DataError(f"{matrix.where}: class codes must be whole numbers 1..{num_classes}")
  codes = codes.astype(np.int64)
  bad = (codes < 1) | (codes > num_classes)
  if bad.any():
    raise DataError(f"{matrix.where}: class codes must be 1..{num_classes}, found {np.unique(codes[bad])[:5].tolist()} "
                    f"(first at row {int(np.flatnonzero(bad)[0])})")
  onehot = np.zeros((codes.size, num_classes), np.uint8)
  onehot[np.arange(codes.size), codes - 1] = 1
  return dataclasses.replace(matrix, array=onehot)


def data_directory(data_dir, dataset: str, hint: str) -> pathlib.Path:
  """`data_dir` as a Path, or a DataError saying what the dataset needs there."""
  if data_dir is None:
    raise DataError(f"dataset {dataset!r} needs data_dir, the folder holding its files. {hint}")
  try:
    path = fileio.user_path(data_dir, f"data_dir of dataset {dataset!r}").expanduser()
  except UserError as e:
    raise DataError(str(e)) from None
  if not path.is_dir():
    raise DataError(f"{path}: data folder for {dataset!r} not found. {hint}")
  return path


def find_file(directory, names) -> pathlib.Path | None:
  """The first of `names` that exists in `directory`, or None."""
  for name in names:
    path = pathlib.Path(directory) / name
    if path.is_file():
      return path
  return None
