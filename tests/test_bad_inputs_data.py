"""Bad inputs to the data layer, one table: every case is one line of DataError naming what is at fault.

Each case writes its (small, hostile or broken) files into the test's tmp dir and returns the
call to make and the strings the message must contain: the file, key, option or value at
fault. Every case checks the exception type, that the message is one line, that it names them,
and that nothing outside the tmp dir changed (the repository, ../shared/data, ~/tensorflow_datasets).
"""

import io as pyio
import os
import pathlib
import struct
import zlib

import h5py
import numpy as np
import pytest
import scipy.io

from conftest import SHARED_DATA
from jxhash.data import DataError, bounds, io, load, parse_options
from test_data import multi_hot, save_v73, write_lineage, write_wikipedia

ROOT = pathlib.Path(__file__).resolve().parents[1]
WATCHED = (ROOT, SHARED_DATA, pathlib.Path.home() / "tensorflow_datasets")
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache"}


def snapshot() -> dict:
  """(size, mtime_ns) of every file under the watched folders."""
  out = {}
  for top in WATCHED:
    if not top.exists():
      out[str(top)] = None
      continue
    for folder, dirs, files in os.walk(top):
      dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
      for name in files:
        stat = os.stat(os.path.join(folder, name))
        out[os.path.join(folder, name)] = (stat.st_size, stat.st_mtime_ns)
  return out


def trio(tmp, n=30):
  """Consistent image / text / labels .npy files for the features loader."""
  rng = np.random.default_rng(0)
  np.save(tmp / "image.npy", rng.normal(size=(n, 4)))
  np.save(tmp / "text.npy", rng.random((n, 6)))
  np.save(tmp / "labels.npy", multi_hot(rng, n, 3))
  return {"image": "image.npy", "text": "text.npy", "labels": "labels.npy", "num_query": 5, "num_train": 10}


def npy_header(shape) -> bytes:
  buf = pyio.BytesIO()
  np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": tuple(shape)})
  return buf.getvalue()


def zip_one(path, name, content: bytes, size: int):
  """A one-member zip of `content`, deflated, whose directory declares `size` uncompressed bytes."""
  c = zlib.compressobj(9, zlib.DEFLATED, -15)
  deflated, crc, n = c.compress(content) + c.flush(), zlib.crc32(content), name.encode()
  local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(deflated), size, len(n), 0) + n
  central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(deflated), size, len(n),
                        0, 0, 0, 0, 0, 0) + n
  end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(deflated), 0)
  path.write_bytes(local + deflated + central + end)


def v5(arrays, *, compress=False, patch=()) -> bytes:
  """A v5 .mat of `arrays`, with (offset, bytes) patches applied before optional compression."""
  buf = pyio.BytesIO()
  scipy.io.savemat(buf, arrays, do_compression=False)
  raw = bytearray(buf.getvalue())
  for offset, data in patch:
    raw[offset:offset + len(data)] = data
  if compress:
    body = zlib.compress(bytes(raw[128:]))
    return bytes(raw[:128]) + struct.pack("<II", 15, len(body)) + body
  return bytes(raw)


# --- the cases: name -> build(tmp, monkeypatch) -> (call, [strings the message names]) ------------


def c_option_not_int(tmp, mp):
  return lambda: parse_options("synthetic", ["num_items=abc"]), ["dataset 'synthetic'", "num_items='abc'", "integer"]


def c_option_int_suffix(tmp, mp):
  return lambda: parse_options("synthetic", ["num_val=50x"]), ["num_val='50x'", "not an integer"]


def c_option_zero_labels(tmp, mp):
  return lambda: load("synthetic", max_labels=0), ["max_labels=0", "out of range", ">= 1"]


def c_option_zero_dim(tmp, mp):
  return lambda: parse_options("synthetic", ["image_dim=0"]), ["image_dim=0", "out of range"]


def c_option_unknown_key(tmp, mp):
  return lambda: parse_options("synthetic", ["name=x"]), ["'name'", "valid options", "num_items"]


def c_option_float_for_int(tmp, mp):
  return lambda: load("synthetic", num_train=96.0), ["num_train=96.0", "not an integer"]


def c_option_bad_bool(tmp, mp):
  return lambda: parse_options("mirflickr25k", ["stream_pixels=maybe"]), ["stream_pixels='maybe'", "true/false"]


def c_option_bad_choice(tmp, mp):
  return lambda: load("nuswide", tmp, tc=5), ["dataset 'nuswide'", "tc=5", "21, 10"]


def c_option_not_key_value(tmp, mp):
  return lambda: parse_options("coco", ["num_query"]), ["'num_query'", "key=value"]


def c_option_seed_as_option(tmp, mp):
  return lambda: parse_options("iapr", ["seed=3"]), ["'seed'", "not a loader option"]


def c_options_too_many_labels(tmp, mp):
  return lambda: load("synthetic", max_labels=12), ["max_labels=12", "num_labels=10"]


def c_options_sizes_do_not_fit(tmp, mp):
  write_lineage(tmp, "mirflickr25k", np.random.default_rng(0), 60, 24)
  return (lambda: load("mirflickr25k", tmp, image="tags", num_query=50, num_train=20),
          ["dataset 'mirflickr25k'", "query=50", "train=20", "60 items"])


def c_options_indices_and_sizes(tmp, mp):
  files = trio(tmp)
  np.savez(tmp / "index.npz", query=np.arange(5), retrieval=np.arange(5, 30), train=np.arange(5, 15))
  return lambda: load("features", tmp, indices="index.npz", **files), ["indices=", "num_query, num_train"]


def c_options_key_without_features(tmp, mp):
  return lambda: load("coco", tmp, image_key="XAll"), ["image_key='XAll'", "image_features"]


def c_options_stream_tags(tmp, mp):
  return lambda: load("iapr", tmp, image="tags", stream_pixels=True), ["stream_pixels", "image='tags'"]


def c_wikipedia_num_val(tmp, mp):
  write_wikipedia(tmp, np.random.default_rng(0))
  return lambda: load("wikipedia", tmp, num_val=40), ["dataset 'wikipedia'", "num_val=40", "40 official training items"]


def c_unknown_dataset(tmp, mp):
  return lambda: load("flickr30k"), ["'flickr30k'", "mirflickr25k"]


def c_unknown_split_rule(tmp, mp):
  return lambda: load("synthetic", split="kfold"), ["'kfold'", "random"]


def c_budget_variable(tmp, mp):
  np.save(tmp / "f.npy", np.ones(3))
  mp.setenv(bounds.ENV_BUDGET, "plenty")
  return lambda: io.read_matrix(tmp / "f.npy"), ["JXHASH_MAX_ARRAY_BYTES='plenty'"]


def c_npy_forged_shape(tmp, mp):
  (tmp / "big.npy").write_bytes(npy_header((10**11, 32)))
  return lambda: io.read_matrix(tmp / "big.npy"), ["big.npy", "(100000000000, 32)", "truncated"]


def c_npz_bomb_over_budget(tmp, mp):
  header = npy_header((4096, 4096))  # 128 MiB of zeros in ~130 KB
  zip_one(tmp / "bomb.npz", "x.npy", header + bytes(4096 * 4096 * 8), len(header) + 4096**2 * 8)
  mp.setenv(bounds.ENV_BUDGET, "64M")
  return lambda: io.read_matrix(tmp / "bomb.npz"), ["bomb.npz [x]", "128.0 MiB", "memory budget of 64.0 MiB"]


def c_npz_header_outgrows_member(tmp, mp):
  header = npy_header((4096, 4096))  # a 128 MiB header in a 1 KB member
  zip_one(tmp / "liar.npz", "x.npy", header + bytes(1000), len(header) + 1000)
  return lambda: io.read_matrix(tmp / "liar.npz"), ["liar.npz [x]", "(4096, 4096)", "archive says"]


def c_npz_missing_key(tmp, mp):
  np.savez(tmp / "f.npz", XAll=np.ones((3, 2)))
  return lambda: io.read_matrix(tmp / "f.npz", "LAll"), ["f.npz", "'LAll'", "'XAll'"]


def c_h5_never_written(tmp, mp):
  with h5py.File(tmp / "never.h5", "w") as f:
    f.create_dataset("X", shape=(300, 10**9), dtype="f4")
  return lambda: io.read_matrix(tmp / "never.h5", "X"), ["never.h5 [X]", "(300, 1000000000)", "never written"]


def c_h5_chunks_missing(tmp, mp):
  with h5py.File(tmp / "part.h5", "w") as f:
    f.create_dataset("X", shape=(100, 8), dtype="f4", chunks=(10, 8))[:30] = 1
  return lambda: io.read_matrix(tmp / "part.h5", "X"), ["part.h5 [X]", "3 of its 10 chunks"]


def c_h5_external(tmp, mp):
  with h5py.File(tmp / "ext.h5", "w") as f:
    f.create_dataset("X", shape=(4, 4), dtype="f4", external=[("/dev/zero", 0, 64)])
  return lambda: io.read_matrix(tmp / "ext.h5", "X"), ["ext.h5 [X]", "outside the file"]


def c_h5_stream_never_written(tmp, mp):
  write_lineage(tmp, "mirflickr25k", np.random.default_rng(0), 30, 24)
  with h5py.File(tmp / "mirflickr25k-iall.mat", "w") as f:
    f.create_dataset("IAll", shape=(30, 3, 224, 224), dtype="u1", chunks=(1, 3, 224, 224))
  return (lambda: load("mirflickr25k", tmp, image="pixels", stream_pixels=True, num_query=5, num_train=10),
          ["mirflickr25k-iall.mat [IAll]", "0 of its 30 chunks"])


def c_mat_lying_element(tmp, mp):
  (tmp / "lie.mat").write_bytes(v5({"X": np.zeros((1, 1))}, compress=True, patch=[(180, struct.pack("<I", 2**31))]))
  return lambda: io.read_matrix(tmp / "lie.mat", "X"), ["lie.mat [X]", "2.0 GiB data element"]


def c_mat_over_budget(tmp, mp):
  (tmp / "huge.mat").write_bytes(v5({"X": np.zeros((1, 1))}, compress=True,
                                    patch=[(160, struct.pack("<ii", 10**5, 10**5))]))
  mp.setenv(bounds.ENV_BUDGET, "1G")
  return lambda: io.read_matrix(tmp / "huge.mat", "X"), ["huge.mat [X]", "100000x100000", "memory budget"]


def c_mat_truncated(tmp, mp):
  (tmp / "cut.mat").write_bytes(v5({"X": np.ones((50, 20))})[:3000])
  return lambda: io.read_matrix(tmp / "cut.mat", "X"), ["cut.mat [X]", "truncated"]


def c_mat_cell(tmp, mp):
  scipy.io.savemat(tmp / "cell.mat", {"C": np.array([np.ones(2), "x"], dtype=object)})
  return lambda: io.read_matrix(tmp / "cell.mat", "C"), ["cell.mat [C]", "cell"]


def c_v73_wrong_item_count(tmp, mp):
  write_lineage(tmp, "mirflickr25k", np.random.default_rng(0), 30, 24)
  save_v73(tmp / "mirflickr25k-iall.mat", {"IAll": np.zeros((6, 5, 3, 29), np.uint8)})
  return (lambda: load("mirflickr25k", tmp, image="pixels", num_query=5, num_train=10),
          ["mirflickr25k-iall.mat [IAll]", "with 30 items"])


def c_list_spaces_for_tabs(tmp, mp):
  write_wikipedia(tmp, np.random.default_rng(0))
  lines = (tmp / "trainset_txt_img_cat.list").read_text().splitlines()
  lines[4] = lines[4].replace("\t", " ")
  (tmp / "trainset_txt_img_cat.list").write_text("\n".join(lines) + "\n")
  return lambda: load("wikipedia", tmp), ["trainset_txt_img_cat.list", "line 5", "tab-separated"]


def c_list_bad_category(tmp, mp):
  write_wikipedia(tmp, np.random.default_rng(0))
  with open(tmp / "testset_txt_img_cat.list", "a") as f:
    f.write("t\ti\tseven\n")
  return lambda: load("wikipedia", tmp), ["testset_txt_img_cat.list", "line 16", "'seven'"]


def c_labels_not_binary(tmp, mp):
  files = trio(tmp)
  labels = np.load(tmp / "labels.npy").astype(np.float64)
  labels[4, 1] = 2
  np.save(tmp / "labels.npy", labels)
  return lambda: load("features", tmp, **files), ["labels.npy", "0/1", "[2.0]"]


def c_rows_disagree(tmp, mp):
  files = trio(tmp)
  np.save(tmp / "text.npy", np.zeros((29, 6)))
  return lambda: load("features", tmp, **files), ["labels.npy", "text.npy", "29"]


def c_image_not_finite(tmp, mp):
  files = trio(tmp)
  image = np.load(tmp / "image.npy")
  image[7, 2] = np.nan
  np.save(tmp / "image.npy", image)
  return lambda: load("features", tmp, **files), ["image.npy", "NaN", "row 7"]


def c_zero_columns_text(tmp, mp):
  files = trio(tmp)
  np.save(tmp / "text.npy", np.zeros((30, 0)))
  return lambda: load("features", tmp, **files), ["text.npy", "text has 0 columns", "(30, 0)"]


def c_zero_columns_labels(tmp, mp):
  files = trio(tmp)
  np.save(tmp / "labels.npy", np.zeros((30, 0), np.uint8))
  return lambda: load("features", tmp, **files), ["labels.npy", "labels has 0 columns"]


def c_zero_columns_image_mat(tmp, mp):
  files = trio(tmp)
  scipy.io.savemat(tmp / "image.mat", {"X": np.zeros((30, 0))})
  return lambda: load("features", tmp, **{**files, "image": "image.mat:X"}), ["image.mat [X]", "0 columns"]


def c_zero_columns_lineage_tags(tmp, mp):
  write_lineage(tmp, "mirflickr25k", np.random.default_rng(0), 30, 24)
  scipy.io.savemat(tmp / "mirflickr25k-yall.mat", {"YAll": np.zeros((30, 0), np.uint8)})
  return (lambda: load("mirflickr25k", tmp, image="tags", num_query=5, num_train=10),
          ["mirflickr25k-yall.mat [YAll]", "0 columns"])


def c_zero_columns_matrix_check(tmp, mp):
  # the check every loader's feature matrices pass through once read (wikipedia's among them)
  m = io.Matrix(np.zeros((5, 0), np.float32), tmp / "w.mat", "I_tr")
  return lambda: io.check_matrix(m, "image features"), ["w.mat [I_tr]", "image features has 0 columns"]


def c_name_parent(tmp, mp):
  files = trio(tmp)
  return lambda: load("features", tmp, name="../../escape", **files), ["option name '../../escape'",
                                                                       "cannot be a file name"]


def c_name_separator(tmp, mp):
  files = trio(tmp)
  return lambda: load("features", tmp, name="a/b", **files), ["option name 'a/b'"]


def c_name_absolute(tmp, mp):
  files = trio(tmp)
  return lambda: load("features", tmp, name="/etc/passwd", **files), ["option name '/etc/passwd'"]


def c_name_trailing_newline(tmp, mp):
  files = trio(tmp)
  return lambda: load("features", tmp, name="wiki\n", **files), ["option name 'wiki\\n'"]


def c_name_too_long(tmp, mp):
  files = trio(tmp)
  return lambda: load("features", tmp, name="n" * 101, **files), ["option name 'nnn", "1 to 100 characters"]


def c_data_dir_not_a_path(tmp, mp):
  files = trio(tmp)
  return lambda: load("features", 12.5, **files), ["data_dir of dataset 'features'", "float 12.5"]


def c_missing_folder(tmp, mp):
  return lambda: load("iapr", tmp / "nowhere"), ["nowhere", "'iapr'"]


CASES = {name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("c_")}


def test_the_table_is_large_enough():
  assert len(CASES) >= 25


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  call, names = CASES[case](tmp_path, monkeypatch)
  before = snapshot()
  with pytest.raises(DataError) as info:
    call()
  message = str(info.value)
  assert type(info.value) is DataError
  assert "\n" not in message and message.strip() == message, message
  for name in names:
    assert name in message, f"{name!r} not in {message!r}"
  assert snapshot() == before, "a file outside the tmp dir changed"
