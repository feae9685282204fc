"""Memory before reading: compressed and oversized inputs are refused from their headers, before a
byte of them is inflated or read (issue 29, item 1).

Each case builds a small-scale bomb (a few hundred KB of compressed zeros declaring tens of MB,
or files whose total is over the budget) and sets the memory budget (`JXHASH_MAX_ARRAY_BYTES`)
to a few MB. Every case checks: a one-line `DataError` (or `UserError`) naming the file and key
at fault; that no reader that inflates or reads array data was called (scipy.io.loadmat,
np.load, numpy's .npy array reader, h5py dataset reads are replaced by functions that fail the
test); that the refusal allocated less than a quarter of what was declared (tracemalloc peak);
and that nothing outside the test's folder changed.
"""

import tracemalloc

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse

from jxhash.data import bounds, io, load
from jxhash.errors import DataError, UserError
from test_bad_inputs_data import snapshot

MB = 1 << 20


def _forbid_reads(monkeypatch):
  """Every reader that inflates or reads array data fails the test if called."""
  def forbidden(name):
    def fail(*args, **kwargs):
      raise AssertionError(f"{name} was called: the refusal came after reading")
    return fail

  monkeypatch.setattr(scipy.io, "loadmat", forbidden("scipy.io.loadmat"))
  monkeypatch.setattr(np, "load", forbidden("np.load"))
  monkeypatch.setattr(np.lib.format, "read_array", forbidden("np.lib.format.read_array"))
  monkeypatch.setattr(h5py.Dataset, "__getitem__", forbidden("h5py.Dataset.__getitem__"))
  monkeypatch.setattr(h5py.Dataset, "read_direct", forbidden("h5py.Dataset.read_direct"))


def _labels(n=40, c=3):
  labels = np.zeros((n, c), np.uint8)
  labels[np.arange(n), np.arange(n) % c] = 1
  return labels


def _features_call(tmp, **files):
  """load("features") of the given role=file specs, the others small and consistent."""
  specs = {"image": "image.npy", "text": "text.npy", "labels": "labels.npy"}
  np.save(tmp / "image.npy", np.ones((40, 4)))
  np.save(tmp / "text.npy", np.ones((40, 6)))
  np.save(tmp / "labels.npy", _labels())
  specs.update(files)
  return lambda: load("features", tmp, num_query=5, num_train=10, **specs)


# --- the cases: name -> build(tmp) -> (call, declared bytes, [strings the message names]) --------


def c_mat_compressed(tmp):
  # a 2000x2000 double of zeros: 30.5 MiB declared, ~30 KB in the file (miCOMPRESSED)
  scipy.io.savemat(tmp / "bomb.mat", {"X": np.zeros((2000, 2000))}, do_compression=True)
  return lambda: io.read_matrix(tmp / "bomb.mat", "X"), 32e6, ["bomb.mat [X]", "2000x2000 double", "memory budget"]


def c_mat_compressed_in_a_loader(tmp):
  scipy.io.savemat(tmp / "bomb.mat", {"X": np.zeros((2000, 2000))}, do_compression=True)
  return _features_call(tmp, text="bomb.mat:X"), 32e6, ["bomb.mat [X]", "memory budget"]


def c_mat_sparse_dims(tmp):
  # an empty 60000x60000 sparse matrix: 434 bytes on disk, 26.8 GiB once densified
  scipy.io.savemat(tmp / "sparse.mat", {"S": scipy.sparse.csc_matrix((60000, 60000))}, do_compression=True)
  return lambda: io.read_matrix(tmp / "sparse.mat", "S"), 28.8e9, ["sparse.mat [S]", "60000x60000 sparse", "26.8 GiB"]


def c_mat_sparse_nzmax(tmp):
  # 600x600 sparse with every entry set (nzmax = 360000): 2.7 MiB dense fits the 4 MiB budget,
  # but scipy inflates the data and row indices (the variable's payload, 4.1 MiB) first
  scipy.io.savemat(tmp / "nz.mat", {"S": scipy.sparse.csc_matrix(np.ones((600, 600)))}, do_compression=True)
  return lambda: io.read_matrix(tmp / "nz.mat", "S"), 4.3e6, ["nz.mat [S]", "600x600 sparse", "4.1 MiB"]


def c_mat_working_copies(tmp):
  # 1000x500 doubles: 3.8 MiB, under the 4 MiB budget, but scipy holds the inflated element and
  # the row-order copy too: 11.4 MiB
  scipy.io.savemat(tmp / "copies.mat", {"X": np.zeros((1000, 500))}, do_compression=True)
  return lambda: io.read_matrix(tmp / "copies.mat", "X"), 4e6, ["copies.mat [X]", "1000x500 float64",
                                                                  "working copies", "11.4 MiB"]


def c_mat_v73_sparse(tmp):
  # a MATLAB v7.3 sparse matrix (HDF5 group): 50000 columns of nothing, dense 18.6 GiB
  with h5py.File(tmp / "v73.h5", "w") as f:
    g = f.create_group("S")
    g.attrs["MATLAB_class"] = np.bytes_("double")
    g.attrs["MATLAB_sparse"] = np.uint64(50000)
    g.create_dataset("jc", data=np.zeros(50001, np.uint64), compression="gzip")
    g.create_dataset("ir", data=np.zeros(0, np.uint64))
    g.create_dataset("data", data=np.zeros(0))
  return lambda: io.read_matrix(tmp / "v73.h5", "S"), 20e9, ["v73.h5 [S]", "50000x50000 sparse matrix made dense"]


def c_hdf5_gzip(tmp):
  with h5py.File(tmp / "bomb.h5", "w") as f:
    f.create_dataset("X", data=np.zeros((2000, 2000)), compression="gzip", chunks=(500, 500))
  return lambda: io.read_matrix(tmp / "bomb.h5", "X"), 32e6, ["bomb.h5 [X]", "(2000, 2000) float64", "memory budget"]


def c_hdf5_gzip_in_a_loader(tmp):
  with h5py.File(tmp / "bomb.h5", "w") as f:
    f.create_dataset("X", data=np.zeros((40, 100000)), compression="gzip", chunks=(40, 10000))
  return _features_call(tmp, image="bomb.h5:X"), 32e6, ["bomb.h5 [X]", "memory budget"]


def c_npz_compressed(tmp):
  np.savez_compressed(tmp / "bomb.npz", X=np.zeros((2000, 2000)))
  return lambda: io.read_matrix(tmp / "bomb.npz", "X"), 32e6, ["bomb.npz [X]", "(2000, 2000) float64", "30.5 MiB"]


def c_npz_in_a_loader(tmp):
  np.savez_compressed(tmp / "bomb.npz", X=np.zeros((40, 100000)))
  return _features_call(tmp, text="bomb.npz:X"), 32e6, ["bomb.npz [X]", "memory budget"]


def c_npy_over_budget(tmp):
  np.save(tmp / "big.npy", np.zeros((1000, 1000)))
  return lambda: io.read_matrix(tmp / "big.npy"), 8e6, ["big.npy", "(1000, 1000) float64", "7.6 MiB"]


def c_files_together_over_budget(tmp):
  # three files each under the 4 MiB budget, 7.6 MiB together: refused before any is read
  np.savez_compressed(tmp / "a.npz", X=np.zeros((40, 12000)))
  np.savez_compressed(tmp / "b.npz", X=np.zeros((40, 12000)))
  return _features_call(tmp, image="a.npz:X", text="b.npz:X"), 7.6e6, ["dataset 'features'", "a.npz [X]",
                                                                       "b.npz [X]", "together"]


def c_rows_disagree_before_reading(tmp):
  # the second file's rows disagree: found from the headers, the first is never read
  np.savez_compressed(tmp / "a.npz", X=np.zeros((40, 10000)))
  np.save(tmp / "short.npy", np.zeros((39, 6)))
  return _features_call(tmp, image="a.npz:X", text="short.npy"), 3.2e6, ["short.npy", "39", "labels.npy"]


def c_zero_columns_before_reading(tmp):
  np.savez_compressed(tmp / "a.npz", X=np.zeros((40, 10000)))
  np.save(tmp / "empty.npy", np.zeros((40, 0)))
  return _features_call(tmp, image="a.npz:X", text="empty.npy"), 3.2e6, ["empty.npy", "text", "0 columns"]


def c_vgg_f_weights(tmp):
  # the pretrained-weights reader (a struct-holding .mat) sizes what scipy would inflate first
  scipy.io.savemat(tmp / "imagenet-vgg-f.mat", {"layers": np.zeros((2000, 2000))}, do_compression=True)
  from jxhash.nets.vgg_f import load_vgg_f
  return lambda: load_vgg_f(tmp / "imagenet-vgg-f.mat"), 32e6, ["imagenet-vgg-f.mat", "reading its variables",
                                                                  "memory budget"]


def c_label_embedding(tmp):
  np.save(tmp / "emb.npy", np.zeros((1000, 1000)))
  from jxhash.methods.mmach import load_label_embedding
  return lambda: load_label_embedding(tmp / "emb.npy"), 8e6, ["emb.npy", "(1000, 1000) float64", "memory budget"]


CASES = {name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("c_")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_from_the_header_before_reading(case, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  call, declared, names = CASES[case](tmp_path)
  monkeypatch.setenv(bounds.ENV_BUDGET, "4M")
  _forbid_reads(monkeypatch)
  before = snapshot()
  tracemalloc.start()
  try:
    with pytest.raises(UserError) as info:
      call()
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  message = str(info.value)
  assert isinstance(info.value, DataError), type(info.value)
  assert "\n" not in message and message.strip() == message, message
  for name in names:
    assert name in message, f"{name!r} not in {message!r}"
  assert peak < min(declared / 4, 2 * MB), f"{peak / MB:.1f} MiB allocated before the refusal"
  assert snapshot() == before, "a file outside the tmp dir changed"


def test_the_same_files_are_read_within_the_budget(tmp_path):
  """The checks refuse by size, not by kind: with room in the budget every bomb above reads (so a
  case cannot pass by refusing everything)."""
  scipy.io.savemat(tmp_path / "m.mat", {"X": np.zeros((1000, 500))}, do_compression=True)
  with h5py.File(tmp_path / "h.h5", "w") as f:
    f.create_dataset("X", data=np.zeros((400, 300)), compression="gzip", chunks=(100, 100))
  np.savez_compressed(tmp_path / "z.npz", X=np.zeros((40, 12000)))
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(bounds.ENV_BUDGET, "16M")
    assert io.read_matrix(tmp_path / "m.mat", "X").array.shape == (1000, 500)
    assert io.read_matrix(tmp_path / "h.h5", "X").array.shape == (400, 300)
    ds = _features_call(tmp_path, image="z.npz:X")()
    assert ds.image.shape == (40, 12000)


def test_declare_reports_what_read_matrix_returns(tmp_path):
  """`io.declare` (headers only) agrees with the array `read_matrix` returns, format by format."""
  x = np.arange(12.0).reshape(3, 4)
  np.save(tmp_path / "a.npy", x)
  np.savez_compressed(tmp_path / "a.npz", X=x)
  scipy.io.savemat(tmp_path / "a.mat", {"X": x}, do_compression=True)
  scipy.io.savemat(tmp_path / "s.mat", {"X": scipy.sparse.csc_matrix(x)})
  with h5py.File(tmp_path / "a.h5", "w") as f:
    f.create_dataset("X", data=x, compression="gzip")
  for name in ("a.npy", "a.npz", "a.mat", "s.mat", "a.h5"):
    declared = io.declare(tmp_path / name, "X")
    array = io.read_matrix(tmp_path / name, "X").array
    assert declared.shape == array.shape, name
    assert declared.nbytes == array.nbytes, name
    assert declared.peak >= declared.nbytes, name


def test_declaring_a_compressed_mat_inflates_only_its_header(tmp_path, monkeypatch):
  """mat5_variables reads a miCOMPRESSED variable's flags and dims through zlib.decompressobj,
  asking for a few hundred bytes, never the whole element."""
  import zlib
  scipy.io.savemat(tmp_path / "bomb.mat", {"X": np.zeros((2000, 2000))}, do_compression=True)
  produced = []
  real = zlib.decompressobj

  class Counting:
    def __init__(self, *args):
      self.inner = real(*args)

    def decompress(self, data, max_length=0):
      out = self.inner.decompress(data, max_length)
      produced.append(len(out))
      return out

    def __getattr__(self, name):
      return getattr(self.inner, name)

  monkeypatch.setattr(zlib, "decompressobj", Counting)  # the module bounds reads through
  assert [v.shape for v in bounds.mat5_variables(tmp_path / "bomb.mat")] == [(2000, 2000)]
  assert 0 < sum(produced) < 4096, sum(produced)


def test_the_table_is_large_enough():
  assert len(CASES) >= 16


def test_a_huge_file_at_a_results_out_is_refused_unread(tmp_path, monkeypatch):
  """run.py's --out check reads an existing file to see whose results it holds; a 3 GB sparse
  file there is refused from its size (tracemalloc: nothing near 3 GB, nor 64 MiB, allocated)."""
  from jxhash.runs import results
  big = tmp_path / "sparse.json"
  with open(big, "wb") as f:
    f.truncate(3 << 30)
  tracemalloc.start()
  try:
    with pytest.raises(UserError, match="sparse.json exists and is not a jxhash results file") as info:
      results.check_writable(big, {"method": "dcmh"})
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert "\n" not in str(info.value)
  assert peak < 1 * MB, peak
  assert big.stat().st_size == 3 << 30
