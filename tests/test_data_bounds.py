"""Bounded reads: hostile files, tiny on disk, are refused from their headers, fast and without big allocations."""

import io as pyio
import struct
import time
import tracemalloc
import zlib

import h5py
import numpy as np
import pytest
import scipy.io

from jxhash.data import bounds, io
from jxhash.errors import DataError

MB = 1 << 20


def refused(fn, *args, match: str, **kwargs) -> DataError:
  """Call fn, expect a one-line DataError matching `match`, within 1 s and allocating < 100 MB."""
  tracemalloc.start()
  start = time.perf_counter()
  try:
    with pytest.raises(DataError, match=match) as info:
      fn(*args, **kwargs)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  message = str(info.value)
  assert "\n" not in message, message
  assert elapsed < 1.0, f"{elapsed:.2f} s"
  assert peak < 100 * MB, f"allocated {peak / MB:.0f} MB"
  return info.value


# --- hostile file makers ------------------------------------------------------------------------


def npy_header(shape, descr="<f8") -> bytes:
  buf = pyio.BytesIO()
  np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
  return buf.getvalue()


def deflate_zeros(prefix: bytes, zeros: int, piece: int = 16 * MB) -> bytes:
  """A raw deflate stream of `prefix` then `zeros` zero bytes, built from one compressed 16 MiB
  piece repeated: each piece is flushed with Z_FULL_FLUSH (byte-aligned, no reference before it),
  so the copies concatenate into a valid stream in a fraction of a second."""
  def part(data, mode):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(mode)
  count, rest = divmod(zeros, piece)
  return part(prefix, zlib.Z_FULL_FLUSH) + part(bytes(piece), zlib.Z_FULL_FLUSH) * count + part(bytes(rest), zlib.Z_FINISH)


def write_zip(path, name: str, deflated: bytes, size: int) -> None:
  """A one-member zip archive around an already deflated member that declares `size` bytes.

  The CRC is left 0: the reader must refuse the member before inflating it, and a reader that
  inflated it would allocate the 2 GB first, which `refused` measures."""
  name_bytes = name.encode()
  local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, 0, len(deflated), size, len(name_bytes), 0)
  central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, 0, len(deflated), size,
                        len(name_bytes), 0, 0, 0, 0, 0, 0)
  offset = len(local) + len(name_bytes) + len(deflated)
  end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + len(name_bytes), offset, 0)
  path.write_bytes(local + name_bytes + deflated + central + name_bytes + end)


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory):
  """bomb.npz: a 2 MB member "x.npy" that inflates to 2 GiB (a 16384×16384 float64 array of zeros)."""
  path = tmp_path_factory.mktemp("bomb") / "bomb.npz"
  header = npy_header((16384, 16384))
  write_zip(path, "x.npy", deflate_zeros(header, 16384 * 16384 * 8), len(header) + 16384 * 16384 * 8)
  return path


def v5_bytes(arrays) -> bytes:
  buf = pyio.BytesIO()
  scipy.io.savemat(buf, arrays, do_compression=False)
  return buf.getvalue()


def compressed_v5(raw: bytes) -> bytes:
  """The uncompressed one-variable v5 file `raw` with its variable zlib-compressed (miCOMPRESSED)."""
  body = zlib.compress(raw[128:])
  return raw[:128] + struct.pack("<II", 15, len(body)) + body


# Offsets in a one-variable uncompressed v5 file of a 2-D variable with a one-letter name, as
# scipy writes it: header 128, matrix tag 128, flags 136, dims tag 152 and values 160..168,
# name 168 (small element), data tag 176 (type at 176, byte count at 180).
DIMS, DATA_COUNT = 160, 180


# --- .npy ---------------------------------------------------------------------------------------


def test_npy_declaring_25_tb_in_128_bytes(tmp_path):
  path = tmp_path / "big.npy"
  path.write_bytes(npy_header((10**11, 32)))
  assert path.stat().st_size == 128
  refused(io.read_matrix, path, match=r"big\.npy: declares shape \(100000000000, 32\) float64 \(23\.3 TiB\) but holds "
          r"only 0 B of data: truncated")
  refused(io.open_rows, path, match=r"big\.npy: declares shape \(100000000000, 32\)")


def test_npy_over_the_budget_and_objects_and_nested_headers(tmp_path, monkeypatch):
  np.save(tmp_path / "f.npy", np.zeros((100, 100)))
  monkeypatch.setenv(bounds.ENV_BUDGET, "64K")
  refused(io.read_matrix, tmp_path / "f.npy", match=r"f\.npy: shape \(100, 100\) float64 needs 78\.1 KiB, over the memory "
          r"budget of 64\.0 KiB; set JXHASH_MAX_ARRAY_BYTES higher")
  monkeypatch.delenv(bounds.ENV_BUDGET)
  assert io.read_matrix(tmp_path / "f.npy").array.shape == (100, 100)
  np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
  refused(io.read_matrix, tmp_path / "obj.npy", match=r"obj\.npy: holds Python objects \(object\), which jxhash never unpickles")
  deep = b"\x93NUMPY\x01\x00" + struct.pack("<H", 2000 * 2 + 56)
  deep += ("{'descr': '<f8', 'fortran_order': False, 'shape': " + "(" * 2000 + ")" * 2000 + "}").encode().ljust(
      2000 * 2 + 56 - 1) + b"\n"
  (tmp_path / "deep.npy").write_bytes(deep)
  refused(io.read_matrix, tmp_path / "deep.npy", match=r"deep\.npy: not a readable \.npy array")


# --- .npz ---------------------------------------------------------------------------------------


def test_npz_member_inflating_to_2_gib_is_refused_before_inflating(zip_bomb, monkeypatch):
  assert zip_bomb.stat().st_size < 3 * MB
  monkeypatch.setenv(bounds.ENV_BUDGET, "1G")
  refused(io.read_matrix, zip_bomb, match=r"bomb\.npz \[x\]: shape \(16384, 16384\) float64 needs 2\.0 GiB, over the "
          r"memory budget of 1\.0 GiB")
  assert io.list_keys(zip_bomb) == ["x"]


def test_npz_member_whose_header_outgrows_the_archive_directory(tmp_path):
  # The npy header claims 2 GiB but the zip directory says the member inflates to 1 MiB:
  # refused whatever the budget (zipfile would stop at 1 MiB, numpy would allocate 2 GiB first).
  header = npy_header((16384, 16384))
  write_zip(tmp_path / "liar.npz", "x.npy", deflate_zeros(header, MB - len(header)), MB)
  refused(io.read_matrix, tmp_path / "liar.npz", match=r"liar\.npz \[x\]: declares shape \(16384, 16384\) float64 "
          r"\(2\.0 GiB\) but the archive says the member holds 1\.0 MiB")


def test_genuine_compressed_npz_still_reads(tmp_path):
  tags = (np.random.default_rng(0).random((2000, 300)) < 0.01).astype(np.float64)
  np.savez_compressed(tmp_path / "tags.npz", YAll=tags, other=np.ones(3))
  np.testing.assert_array_equal(io.read_array(tmp_path / "tags.npz", "YAll"), tags)


# --- HDF5 ---------------------------------------------------------------------------------------


def test_hdf5_declared_but_never_written(tmp_path):
  path = tmp_path / "never.h5"
  with h5py.File(path, "w") as f:
    f.create_dataset("contiguous", shape=(300, 10**9), dtype="f4")
    f.create_dataset("chunked", shape=(300, 10**9), dtype="f4", chunks=(10, 10**5), compression="gzip")
    half = f.create_dataset("half", shape=(100, 40), dtype="f4", chunks=(10, 40))
    half[:50] = 1
  assert path.stat().st_size < 20_000
  refused(io.read_matrix, path, "contiguous", match=r"never\.h5 \[contiguous\]: declares shape \(300, 1000000000\) float32 "
          r"\(1\.1 TiB\) but only 0 B are stored: never written")
  refused(io.read_matrix, path, "chunked", match=r"never\.h5 \[chunked\]: declares .* but only 0 of its 300000 chunks "
          r"were written")
  refused(io.read_matrix, path, "half", match=r"never\.h5 \[half\]: declares shape \(100, 40\) float32 \(15\.6 KiB\) but "
          r"only 5 of its 10 chunks were written")
  refused(io.open_rows, path, "half", match=r"only 5 of its 10 chunks")


def test_hdf5_fill_value_set_on_purpose_is_read(tmp_path):
  with h5py.File(tmp_path / "fill.h5", "w") as f:
    sparse = f.create_dataset("X", shape=(20, 4), dtype="f4", chunks=(5, 4), fillvalue=-1)
    sparse[:5] = 2
  got = io.read_array(tmp_path / "fill.h5", "X")
  assert (got[:5] == 2).all() and (got[5:] == -1).all()


def test_hdf5_external_virtual_truncated_and_over_budget(tmp_path, monkeypatch):
  with h5py.File(tmp_path / "ext.h5", "w") as f:
    f.create_dataset("X", shape=(10, 4), dtype="f4", external=[("/dev/zero", 0, 160)])
  refused(io.read_matrix, tmp_path / "ext.h5", "X", match=r"ext\.h5 \[X\]: keeps its data outside the file")
  layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
  layout[:] = h5py.VirtualSource("other.h5", "Y", shape=(4,))
  with h5py.File(tmp_path / "virtual.h5", "w") as f:
    f.create_virtual_dataset("X", layout)
  refused(io.read_matrix, tmp_path / "virtual.h5", "X", match=r"virtual\.h5 \[X\]: keeps its data outside the file")
  with h5py.File(tmp_path / "cut.h5", "w") as f:
    f.create_dataset("X", data=np.ones((200, 100)))
  data = (tmp_path / "cut.h5").read_bytes()
  (tmp_path / "cut.h5").write_bytes(data[:len(data) - 80_000])
  refused(io.read_matrix, tmp_path / "cut.h5", "X", match=r"cut\.h5(: cannot read the file| \[X\]: its 156\.2 KiB of data "
          r"start at byte \d+ but the file ends)")
  monkeypatch.setenv(bounds.ENV_BUDGET, "100000")
  with h5py.File(tmp_path / "ok.h5", "w") as f:
    f.create_dataset("X", data=np.ones((200, 100)))
  refused(io.read_matrix, tmp_path / "ok.h5", "X", match=r"ok\.h5 \[X\]: shape \(200, 100\) float64 needs 156\.2 KiB, over "
          r"the memory budget of 97\.7 KiB")


def test_v73_sparse_densified_size_is_checked(tmp_path, monkeypatch):
  with h5py.File(tmp_path / "sparse.mat", "w") as f:
    group = f.create_group("Y")
    group.attrs["MATLAB_sparse"] = np.uint64(10**9)
    group.attrs["MATLAB_class"] = np.bytes_("double")
    group.create_dataset("jc", data=np.zeros(10**4 + 1, np.uint64))
    group.create_dataset("ir", data=np.zeros(0, np.uint64))
    group.create_dataset("data", data=np.zeros(0))
  refused(io.read_matrix, tmp_path / "sparse.mat", "Y", match=r"sparse\.mat \[Y\]: a 1000000000x10000 sparse matrix made "
          r"dense needs 72\.8 TiB, over the memory budget")


# --- MATLAB v5 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
def test_mat_data_element_longer_than_its_shape(tmp_path, compressed):
  raw = bytearray(v5_bytes({"X": np.zeros((1, 1))}))
  assert struct.unpack("<I", raw[DATA_COUNT:DATA_COUNT + 4]) == (8,)
  raw[DATA_COUNT:DATA_COUNT + 4] = struct.pack("<I", 2**31)  # the element now claims 2 GiB
  data = compressed_v5(bytes(raw)) if compressed else bytes(raw)
  (tmp_path / "lie.mat").write_bytes(data)
  if compressed:
    refused(io.read_matrix, tmp_path / "lie.mat", "X", match=r"lie\.mat \[X\]: holds a 2\.0 GiB data element but "
            r"its declared shape allows 8 B: damaged or forged")
  else:
    refused(io.read_matrix, tmp_path / "lie.mat", "X", match=r"lie\.mat \[X\]: holds a 2\.0 GiB data element")


def test_mat_variable_over_the_budget_and_truncated(tmp_path, monkeypatch):
  raw = bytearray(v5_bytes({"X": np.zeros((1, 1))}))
  raw[DIMS:DIMS + 8] = struct.pack("<ii", 100_000, 100_000)  # declares 80 GB of doubles, stores 8 bytes
  (tmp_path / "huge.mat").write_bytes(compressed_v5(bytes(raw)))
  monkeypatch.setenv(bounds.ENV_BUDGET, "16G")
  refused(io.read_matrix, tmp_path / "huge.mat", "X", match=r"huge\.mat \[X\]: a 100000x100000 double variable needs "
          r"74\.5 GiB, over the memory budget of 16\.0 GiB")
  scipy.io.savemat(tmp_path / "cut.mat", {"X": np.ones((100, 100))}, do_compression=True)
  (tmp_path / "cut.mat").write_bytes((tmp_path / "cut.mat").read_bytes()[:150])
  refused(io.read_matrix, tmp_path / "cut.mat", "X", match=r"cut\.mat( \[X\]|).*truncated")


def test_mat_cells_structs_and_complex_are_refused_before_loading(tmp_path):
  scipy.io.savemat(tmp_path / "odd.mat", {"C": np.array([np.ones(2), "x"], dtype=object), "S": {"a": np.ones(3)},
                                          "Z": np.ones((2, 2)) * 1j})
  refused(io.read_matrix, tmp_path / "odd.mat", "C", match=r"odd\.mat \[C\]: holds a MATLAB cell array, not a numeric matrix")
  refused(io.read_matrix, tmp_path / "odd.mat", "S", match=r"odd\.mat \[S\]: holds a MATLAB struct array")
  refused(io.read_matrix, tmp_path / "odd.mat", "Z", match=r"odd\.mat \[Z\]: holds complex numbers")


def test_mat_headers_agree_with_scipy_on_real_files(wikipedia_dir, mirflickr_dir):
  for path in sorted(list(wikipedia_dir.glob("*.mat")) + list(mirflickr_dir.glob("*.mat"))):
    ours = [(v.name, v.shape, v.mclass) for v in bounds.mat5_variables(path)]
    assert ours == [(n, tuple(s), c) for n, s, c in scipy.io.whosmat(path)], path.name


# --- the budget and MemoryError -------------------------------------------------------------------


def test_budget_setting(monkeypatch):
  monkeypatch.delenv(bounds.ENV_BUDGET, raising=False)
  memory = bounds.machine_memory()
  assert memory and bounds.max_array_bytes() == memory // 2
  for text, value in (("123", 123), ("8G", 8 << 30), ("1.5M", 3 << 19), ("2GiB", 2 << 30), ("1e9", 10**9)):
    monkeypatch.setenv(bounds.ENV_BUDGET, text)
    assert bounds.max_array_bytes() == value
  for bad in ("lots", "-5", "0", "8X"):
    monkeypatch.setenv(bounds.ENV_BUDGET, bad)
    with pytest.raises(DataError, match=f"JXHASH_MAX_ARRAY_BYTES={bad!r}"):
      bounds.max_array_bytes()


def test_memory_error_while_reading_names_the_file(tmp_path, monkeypatch):
  np.save(tmp_path / "f.npy", np.ones((3, 2)))

  def no_memory(*args, **kwargs):
    raise MemoryError

  monkeypatch.setattr(np, "load", no_memory)
  with pytest.raises(DataError, match=r"f\.npy: not enough memory to read it"):
    io.read_matrix(tmp_path / "f.npy")
