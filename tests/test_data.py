"""Dataset loaders on small files written in the real formats, and on the real data in ../shared."""

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from conftest import TINY_SPLIT, shared_path
from jxhash.data import LOADERS, io, load
from jxhash.data.wikipedia import LISTS

WIKI_TRAIN_COUNTS = [138, 272, 244, 248, 202, 178, 186, 144, 214, 347]
WIKI_TEST_COUNTS = [34, 88, 96, 85, 65, 58, 51, 41, 71, 104]


# --- writers for the formats the releases use ------------------------------------------------

_MATLAB_CLASS = {"f": "double", "u": "uint8", "i": "int32", "b": "logical"}


def save_v73(path, arrays, matlab=True):
  """Write arrays the way MATLAB's `save -v7.3` does: HDF5 behind a 512-byte header, axes reversed.

  MATLAB is column-major, so an N×D variable is stored as a D×N dataset (and an H×W×3×N stack
  as N×3×W×H); each dataset carries its MATLAB class. matlab=False writes plain numpy-order HDF5.
  """
  import h5py
  with h5py.File(path, "w", userblock_size=512 if matlab else 0) as f:
    for key, value in arrays.items():
      value = np.asarray(value)
      if matlab:
        data = f.create_dataset(key, data=np.ascontiguousarray(value.transpose()))
        data.attrs["MATLAB_class"] = np.bytes_(_MATLAB_CLASS.get(value.dtype.kind, "char"))
      else:
        f.create_dataset(key, data=value)
  if matlab:
    with open(path, "r+b") as f:
      f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116))


def multi_hot(rng, n, c, empty_rows=()):
  labels = (rng.random((n, c)) < 0.15).astype(np.uint8)
  labels[np.arange(n), rng.integers(0, c, n)] = 1
  labels[list(empty_rows)] = 0
  return labels


def pixels(rng, n, h=5, w=4):
  return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def check_protocol(data, *, num_query, num_train, num_val, num_items):
  assert data.num_items == num_items
  assert data.sizes() == {"query": num_query, "retrieval": num_items - num_query, "train": num_train,
                          "val": num_val}
  assert np.intersect1d(data.query, data.retrieval).size == 0
  assert np.union1d(data.query, data.retrieval).size == num_items
  assert np.isin(data.train, data.retrieval).all()
  assert np.isin(data.val, data.retrieval).all()
  assert np.intersect1d(data.val, data.train).size == 0


# --- io: formats and orientation ------------------------------------------------------------


@pytest.fixture
def matrix():
  # Non-square with distinct rows, so a transposed or shuffled read cannot pass.
  return np.arange(7 * 3, dtype=np.float64).reshape(7, 3) * 1.5


def test_read_matrix_all_formats_keep_orientation(tmp_path, matrix):
  np.save(tmp_path / "a.npy", matrix)
  np.savez(tmp_path / "a.npz", other=np.zeros(2), X=matrix)
  scipy.io.savemat(tmp_path / "a5.mat", {"X": matrix, "Y": np.ones((2, 2))})
  save_v73(tmp_path / "a73.mat", {"X": matrix, "Y": np.ones((2, 2))})
  save_v73(tmp_path / "plain.h5", {"X": matrix}, matlab=False)
  for name in ("a.npy", "a.npz", "a5.mat", "a73.mat", "plain.h5"):
    got = io.read_matrix(tmp_path / name, ["missing", "X"])
    assert got.array.shape == (7, 3), name
    np.testing.assert_array_equal(got.array[4], matrix[4])
    np.testing.assert_array_equal(got.array, matrix)


def test_v73_detected_by_signature_not_extension(tmp_path, matrix):
  save_v73(tmp_path / "features.h5", {"X": matrix})
  save_v73(tmp_path / "features.bin", {"X": matrix})
  assert io.is_hdf5(tmp_path / "features.h5") and io.is_hdf5(tmp_path / "features.bin")
  scipy.io.savemat(tmp_path / "v5.mat", {"X": matrix})
  assert not io.is_hdf5(tmp_path / "v5.mat")
  np.testing.assert_array_equal(io.read_array(tmp_path / "features.bin", "X"), matrix)


def test_single_array_needs_no_key_and_sparse_is_densified(tmp_path, matrix):
  np.savez(tmp_path / "one.npz", anything=matrix)
  np.testing.assert_array_equal(io.read_array(tmp_path / "one.npz"), matrix)
  tags = (np.arange(20).reshape(4, 5) % 3 == 0).astype(np.float64)
  scipy.io.savemat(tmp_path / "sparse.mat", {"YAll": scipy.sparse.csc_matrix(tags)})
  np.testing.assert_array_equal(io.read_array(tmp_path / "sparse.mat", "YAll"), tags)


def test_split_spec(tmp_path):
  assert io.split_spec("feats.npz:XAll", tmp_path) == (tmp_path / "feats.npz", "XAll")
  assert io.split_spec("feats.npy", tmp_path) == (tmp_path / "feats.npy", None)
  assert io.split_spec(str(tmp_path / "f.mat") + ":X") == (tmp_path / "f.mat", "X")


@pytest.mark.parametrize("matlab_shape", ["HW3N", "NHW3"])
def test_v73_pixels_come_back_as_nhwc(tmp_path, matlab_shape):
  rng = np.random.default_rng(0)
  pix = pixels(rng, 6)
  stack = pix.transpose(1, 2, 3, 0) if matlab_shape == "HW3N" else pix
  save_v73(tmp_path / "iall.mat", {"IAll": stack})
  got = io.as_pixels(io.read_matrix(tmp_path / "iall.mat", "IAll"), 6)
  assert got.array.shape == (6, 5, 4, 3) and got.array.flags.c_contiguous
  np.testing.assert_array_equal(got.array, pix)


def test_open_rows_reads_only_asked_rows_in_any_order(tmp_path, matrix):
  rng = np.random.default_rng(1)
  pix = pixels(rng, 9)
  save_v73(tmp_path / "iall.mat", {"IAll": pix.transpose(1, 2, 3, 0)})
  save_v73(tmp_path / "feats.mat", {"XAll": matrix})
  np.save(tmp_path / "feats.npy", matrix)
  with io.open_rows(tmp_path / "iall.mat", "IAll", pixels=True, num_rows=9) as rows:
    assert rows.shape == (9, 5, 4, 3) and len(rows) == 9
    np.testing.assert_array_equal(rows[[7, 2, 2, 0]], pix[[7, 2, 2, 0]])
    np.testing.assert_array_equal(rows[3:6], pix[3:6])
    np.testing.assert_array_equal(rows[4], pix[4])
  np.testing.assert_array_equal(io.read_pixels(tmp_path / "iall.mat", "IAll", num_rows=9, chunk=4).array, pix)
  np.save(tmp_path / "iall.npy", pix.transpose(0, 3, 1, 2))
  np.testing.assert_array_equal(io.read_pixels(tmp_path / "iall.npy", num_rows=9, chunk=2).array, pix)
  for name in ("feats.mat", "feats.npy"):
    with io.open_rows(tmp_path / name, "XAll") as rows:
      assert rows.shape == (7, 3)
      np.testing.assert_array_equal(rows[np.array([6, 1])], matrix[[6, 1]])


# --- Wikipedia --------------------------------------------------------------------------------


def write_wikipedia(directory, rng, n_train=40, n_test=15):
  parts = {"I_tr": rng.random((n_train, 128)), "I_te": rng.random((n_test, 128)),
           "T_tr": rng.random((n_train, 10)), "T_te": rng.random((n_test, 10))}
  codes = {"tr": np.arange(n_train) % 10 + 1, "te": rng.integers(1, 11, n_test)}
  directory.mkdir(exist_ok=True)
  scipy.io.savemat(directory / "raw_features.mat", parts)
  for half, name in zip(("tr", "te"), LISTS):
    lines = [f"t{i}-{half}\timg{i}\t{c}" for i, c in enumerate(codes[half])]
    (directory / name).write_text("\n".join(lines) + "\n")
  return parts, codes


def test_wikipedia_sources_agree_and_keep_the_official_split(tmp_path):
  rng = np.random.default_rng(0)
  parts, codes = write_wikipedia(tmp_path / "raw", rng)
  coded = dict(parts, L_tr=codes["tr"][:, None].astype(np.uint8), L_te=codes["te"][:, None].astype(np.uint8))
  eye = np.eye(10, dtype=np.uint8)
  onehot = dict(parts, L_tr=eye[codes["tr"] - 1], L_te=eye[codes["te"] - 1])
  (tmp_path / "coded").mkdir()
  scipy.io.savemat(tmp_path / "coded" / "wikiData.mat", coded)
  scipy.io.savemat(tmp_path / "coded" / "multi.mat", onehot)
  (tmp_path / "v73").mkdir()
  save_v73(tmp_path / "v73" / "wiki_data.mat", onehot)
  loaded = [load("wikipedia", tmp_path / "raw"), load("wikipedia", tmp_path / "coded"),
            load("wikipedia", tmp_path / "coded", file="multi.mat"), load("wikipedia", tmp_path / "v73", split="dcmh")]
  for data in loaded:
    assert data.image.shape == (55, 128) and data.text.shape == (55, 10) and data.labels.shape == (55, 10)
    assert data.image.dtype == np.float32
    np.testing.assert_array_equal(data.query, np.arange(40, 55))
    np.testing.assert_array_equal(data.train, np.arange(40))
    np.testing.assert_array_equal(data.retrieval, np.arange(40))
    assert data.val.size == 0
    np.testing.assert_allclose(data.image[3], parts["I_tr"][3], rtol=1e-6)
    np.testing.assert_allclose(data.text[40 + 2], parts["T_te"][2], rtol=1e-6)
    np.testing.assert_array_equal(data.labels.argmax(1), np.concatenate([codes["tr"], codes["te"]]) - 1)
    np.testing.assert_array_equal(data.image, loaded[0].image)


def test_wikipedia_val_is_seeded_and_carved_from_train(tmp_path):
  write_wikipedia(tmp_path, np.random.default_rng(0))
  a, b, c = (load("wikipedia", tmp_path, seed=s, num_val=8) for s in (1, 1, 2))
  assert a.sizes() == {"query": 15, "retrieval": 40, "train": 32, "val": 8}
  np.testing.assert_array_equal(a.val, b.val)
  assert not np.array_equal(a.val, c.val)
  assert np.intersect1d(a.val, a.train).size == 0 and np.isin(a.val, np.arange(40)).all()
  np.testing.assert_array_equal(a.query, c.query)


# --- MIRFlickr and the other DCMH-lineage datasets ---------------------------------------------


def write_lineage(directory, prefix, rng, n, num_labels, num_tags=30, empty_rows=(), v73_tags=False):
  labels = multi_hot(rng, n, num_labels, empty_rows)
  tags = (rng.random((n, num_tags)) < 0.2).astype(np.uint8)
  directory.mkdir(exist_ok=True)
  scipy.io.savemat(directory / f"{prefix}-lall.mat", {"LAll": labels})
  if v73_tags:
    save_v73(directory / f"{prefix}-yall.mat", {"YAll": tags})
  else:
    scipy.io.savemat(directory / f"{prefix}-yall.mat", {"YAll": tags})
  return labels, tags


MIR = {"num_query": 10, "num_train": 20, "num_val": 5}


def test_mirflickr_image_sources(tmp_path):
  rng = np.random.default_rng(0)
  labels, tags = write_lineage(tmp_path, "mirflickr25k", rng, 60, 24)
  feats = rng.normal(size=(60, 16))
  pix = pixels(rng, 60)
  np.save(tmp_path / "vgg.npy", feats)
  np.savez(tmp_path / "vgg.npz", names=np.zeros(3), feats=feats)

  stand_in = load("mirflickr25k", tmp_path, image="tags", **MIR)
  np.testing.assert_array_equal(stand_in.image, tags)
  assert stand_in.split_info["image_stand_in"] == "tags"
  for spec in ("vgg.npy", "vgg.npz:feats", str(tmp_path / "vgg.npz:feats")):
    data = load("mirflickr25k", tmp_path, image_features=spec, **MIR)
    assert data.image.shape == (60, 16) and data.image.dtype == np.float32
    np.testing.assert_allclose(data.image[11], feats[11], rtol=1e-6)

  scipy.io.savemat(tmp_path / "mirflickr25k-iall-vgg.mat", {"XAll": feats})
  np.testing.assert_allclose(load("mirflickr25k", tmp_path, **MIR).image, feats, rtol=1e-6)
  save_v73(tmp_path / "mirflickr25k-iall.mat", {"IAll": pix.transpose(1, 2, 3, 0)})
  data = load("mirflickr25k", tmp_path, image="pixels", **MIR)
  assert data.is_pixels and data.image.shape == (60, 5, 4, 3)
  np.testing.assert_array_equal(data.image[17], pix[17])
  for data in (stand_in, data):
    np.testing.assert_array_equal(data.labels[5], labels[5])
    np.testing.assert_array_equal(data.text[59], tags[59])


def test_mirflickr_from_dcmh_flickr25k_mat(tmp_path):
  # DCMH's file: one v7.3 file holding images (H×W×3×N), YAll and LAll, all column-major.
  rng = np.random.default_rng(1)
  labels, tags, pix = multi_hot(rng, 50, 24), (rng.random((50, 12)) < 0.3).astype(np.uint8), pixels(rng, 50)
  save_v73(tmp_path / "FLICKR-25K.mat", {"images": pix.transpose(1, 2, 3, 0), "YAll": tags, "LAll": labels})
  data = load("mirflickr25k", tmp_path, split="dcmh", **MIR)
  assert data.image.shape == (50, 5, 4, 3) and data.text.shape == (50, 12) and data.labels.shape == (50, 24)
  np.testing.assert_array_equal(data.image, pix)
  np.testing.assert_array_equal(data.text, tags)
  np.testing.assert_array_equal(data.labels, labels)


def test_mirflickr_dcmh_order_and_seeded_random_split(tmp_path):
  write_lineage(tmp_path, "mirflickr25k", np.random.default_rng(2), 60, 24)
  dcmh = load("mirflickr25k", tmp_path, split="dcmh", image="tags", **MIR)
  np.testing.assert_array_equal(dcmh.query, np.arange(10))
  np.testing.assert_array_equal(dcmh.train, np.arange(10, 30))
  np.testing.assert_array_equal(dcmh.retrieval, np.arange(10, 60))
  np.testing.assert_array_equal(dcmh.val, np.arange(55, 60))
  check_protocol(dcmh, num_query=10, num_train=20, num_val=5, num_items=60)
  a, b, c = (load("mirflickr25k", tmp_path, seed=s, image="tags", **MIR) for s in (3, 3, 4))
  for split in ("query", "train", "val", "retrieval"):
    np.testing.assert_array_equal(getattr(a, split), getattr(b, split))
  assert not np.array_equal(a.query, c.query) and not np.array_equal(a.train, c.train)
  check_protocol(a, num_query=10, num_train=20, num_val=5, num_items=60)
  assert a.split_info["seed"] == 3 and a.split_info["rule"] == "random"


def test_nuswide_drops_unlabeled_items_and_supports_tc10(tmp_path):
  rng = np.random.default_rng(3)
  labels, tags = write_lineage(tmp_path, "nus-wide-tc21", rng, 70, 21, empty_rows=(0, 33, 69), v73_tags=True)
  feats = rng.normal(size=(70, 8)).astype(np.float32)
  feats[33] = 1e3  # marks a dropped row: it must not survive
  save_v73(tmp_path / "feats.h5", {"X": feats}, matlab=False)
  data = load("nuswide", tmp_path, split="dcmh", image_features="feats.h5", num_query=7, num_train=20, num_val=4)
  assert data.split_info["dropped_unlabeled"] == 3 and data.split_info["tc"] == 21
  kept = np.setdiff1d(np.arange(70), [0, 33, 69])
  np.testing.assert_array_equal(data.image, feats[kept])
  np.testing.assert_array_equal(data.text, tags[kept])
  assert data.labels.any(axis=1).all()
  check_protocol(data, num_query=7, num_train=20, num_val=4, num_items=67)

  write_lineage(tmp_path, "nus-wide-tc10", rng, 40, 10)
  tc10 = load("nuswide", tmp_path, tc=10, image="tags", num_query=5, num_train=10, num_val=2)
  assert tc10.labels.shape == (40, 10) and tc10.split_info["tc"] == 10


def test_iapr_with_v73_features(tmp_path):
  rng = np.random.default_rng(4)
  labels, tags = write_lineage(tmp_path, "iapr-tc12", rng, 45, 255, num_tags=40)
  feats = rng.normal(size=(45, 6))
  save_v73(tmp_path / "iapr-tc12-xall-vgg.mat", {"XAll": feats})
  data = load("iapr", tmp_path, num_query=5, num_train=15, num_val=3, seed=1)
  assert (data.image.shape, data.text.shape, data.labels.shape) == ((45, 6), (45, 40), (45, 255))
  np.testing.assert_allclose(data.image[44], feats[44], rtol=1e-6)
  check_protocol(data, num_query=5, num_train=15, num_val=3, num_items=45)


def test_coco_from_npy_files(tmp_path):
  rng = np.random.default_rng(5)
  labels = multi_hot(rng, 50, 80, empty_rows=(10,))
  text = rng.random((50, 12)).astype(np.float32)
  np.save(tmp_path / "coco-lall.npy", labels)
  np.save(tmp_path / "coco-yall.npy", text)
  np.save(tmp_path / "coco-iall-vgg.npy", rng.normal(size=(50, 9)))
  data = load("coco", tmp_path, num_query=6, num_train=20, num_val=2)
  assert data.image.shape == (49, 9) and data.labels.shape == (49, 80)
  assert data.split_info["dropped_unlabeled"] == 1
  np.testing.assert_array_equal(data.text[10], text[11])
  check_protocol(data, num_query=6, num_train=20, num_val=2, num_items=49)


def test_features_loader_with_sizes_or_index_file(tmp_path):
  rng = np.random.default_rng(6)
  image, text, labels = rng.normal(size=(40, 5)), rng.random((40, 7)), multi_hot(rng, 40, 4)
  np.savez(tmp_path / "image.npz", img=image, junk=np.zeros(1))
  scipy.io.savemat(tmp_path / "text.mat", {"T": text})
  np.save(tmp_path / "labels.npy", labels)
  options = {"image": "image.npz:img", "text": "text.mat", "labels": "labels.npy"}
  data = load("features", tmp_path, num_query=8, num_train=12, num_val=3, num_retrieval=30, **options)
  assert data.sizes() == {"query": 8, "retrieval": 30, "train": 12, "val": 3}
  np.testing.assert_allclose(data.image[21], image[21], rtol=1e-6)
  np.testing.assert_allclose(data.text[21], text[21], rtol=1e-6)
  dcmh = load("features", tmp_path, split="dcmh", num_query=8, num_train=12, **options)
  np.testing.assert_array_equal(dcmh.query, np.arange(8))
  np.testing.assert_array_equal(dcmh.train, np.arange(8, 20))

  # A MATLAB index file, 1-based.
  scipy.io.savemat(tmp_path / "index.mat", {"query": np.arange(1, 6)[None], "retrieval": np.arange(6, 41)[None],
                                            "train": np.arange(6, 21)[None], "val": np.arange(21, 24)[None]})
  given = load("features", tmp_path, indices="index.mat", index_base=1, **options)
  np.testing.assert_array_equal(given.query, np.arange(5))
  np.testing.assert_array_equal(given.val, np.arange(20, 23))
  assert given.split_info["rule"] == "given"


def test_every_loader_is_registered():
  assert {"synthetic", "wikipedia", "mirflickr25k", "nuswide", "iapr", "coco", "features"} <= set(LOADERS)


# --- real data in ../shared/data ----------------------------------------------------------------


def test_wikipedia_real_data_both_sources(wikipedia_dir):
  shared_path("wikipedia", "wikiData.mat")
  for name in ("raw_features.mat", *LISTS):
    shared_path("wikipedia", name)
  raw = load("wikipedia", wikipedia_dir, file="raw_features.mat")
  wiki = load("wikipedia", wikipedia_dir, file="wikiData.mat")
  for data in (raw, wiki):
    assert data.image.shape == (2866, 128) and data.text.shape == (2866, 10) and data.labels.shape == (2866, 10)
    assert data.sizes() == {"query": 693, "retrieval": 2173, "train": 2173, "val": 0}
    assert data.labels[data.train].sum(0).tolist() == WIKI_TRAIN_COUNTS
    assert data.labels[data.query].sum(0).tolist() == WIKI_TEST_COUNTS
  np.testing.assert_array_equal(raw.image, wiki.image)
  np.testing.assert_array_equal(raw.text, wiki.text)
  np.testing.assert_array_equal(raw.labels, wiki.labels)


def test_mirflickr_real_labels_and_tags(mirflickr_dir):
  shared_path("mirflickr25k", "mirflickr25k-lall.mat")
  shared_path("mirflickr25k", "mirflickr25k-yall.mat")
  data = load("mirflickr25k", mirflickr_dir, image="tags", split="dcmh")
  assert data.labels.shape == (20015, 24) and data.text.shape == (20015, 1386)
  assert data.sizes() == {"query": 2000, "retrieval": 18015, "train": 10000, "val": 500}
  np.testing.assert_array_equal(data.train, np.arange(2000, 12000))
  assert data.split_info["dropped_unlabeled"] == 0


# --- Wikipedia's .list files ----------------------------------------------------------------------


def test_real_lists_parse_by_tabs(wikipedia_dir):
  from jxhash.data.wikipedia import read_list
  for name, counts in zip(LISTS, (WIKI_TRAIN_COUNTS, WIKI_TEST_COUNTS)):
    path = shared_path("wikipedia", name)
    got = read_list(path)
    assert got.array.sum(0).tolist() == counts
    lines = path.read_text().splitlines()
    np.testing.assert_array_equal(got.array.argmax(1) + 1, [int(line.split("\t")[2]) for line in lines])


def test_list_lines_with_spaces_inside_fields_are_read_as_they_are(tmp_path):
  from jxhash.data.wikipedia import read_list
  path = tmp_path / "a.list"
  path.write_text("text one\timage 1\t3\r\n"      # spaces inside fields, CRLF
                  "t2\ti2\t 10 \n"                 # padded category
                  "\n   \n"                        # blank lines are skipped
                  "t\u20283\ti3\t7\n"              # a Unicode line separator inside a field is not a line break
                  "t4\ti4\t2\t\n", encoding="utf-8")  # a trailing tab (whitespace at the end)
  np.testing.assert_array_equal(read_list(path).array.argmax(1) + 1, [3, 10, 7, 2])


@pytest.mark.parametrize("line, message", [
    ("t1 i1 3", r"line 2 has 1 tab-separated fields, expected 3 \(text_id<TAB>image_id<TAB>category\): 't1 i1 3'"),
    ("t1\ti1 3", r"line 2 has 2 tab-separated fields"),
    ("t1\ti1\t3\textra", r"line 2 has 4 tab-separated fields"),
    ("\ti1\t3", r"line 2 has an empty text_id"),
    ("t1\t \t3", r"line 2 has an empty image_id"),
    ("t1\ti1\t3 4", r"line 2: category '3 4' is not a whole number 1\.\.10"),
    ("t1\ti1\t-3", r"line 2: category '-3' is not a whole number"),
    ("t1\ti1\t\u00b3", r"line 2: category '\u00b3' is not a whole number"),
    ("t1\ti1\t11", r"class codes must be 1\.\.10, found \[11\] \(first at row 1\)"),
])
def test_hostile_list_lines_are_refused(tmp_path, line, message):
  from jxhash.data.wikipedia import read_list
  from jxhash.errors import DataError
  path = tmp_path / "bad.list"
  path.write_text(f"t0\ti0\t1\n{line}\n", encoding="utf-8")
  with pytest.raises(DataError, match=r"bad\.list.*" + message) as info:
    read_list(path)
  assert "\n" not in str(info.value)


def test_a_dataset_prints_as_one_line_summary():
  ds = load("synthetic", **TINY_SPLIT)
  text = repr(ds)
  assert "\n" not in text and len(text) < 300 and "300 items" in text and "'train': 96" in text
