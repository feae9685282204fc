"""Bad inputs give a DataError whose message names the file, key or problem."""

import numpy as np
import pytest
import scipy.io

from jxhash.data import CrossModalData, DataError, io, load
from test_data import multi_hot, save_v73, write_lineage, write_wikipedia


@pytest.fixture
def trio(tmp_path):
  """Consistent image / text / labels files for the features loader; tests spoil one of them."""
  rng = np.random.default_rng(0)
  np.save(tmp_path / "image.npy", rng.normal(size=(30, 4)))
  np.save(tmp_path / "text.npy", rng.random((30, 6)))
  np.save(tmp_path / "labels.npy", multi_hot(rng, 30, 3))
  return {"image": "image.npy", "text": "text.npy", "labels": "labels.npy", "num_query": 5, "num_train": 10}


def load_trio(tmp_path, trio, **changes):
  return load("features", tmp_path, **dict(trio, **changes))


def test_missing_file_names_it_and_what_to_download(tmp_path, trio):
  with pytest.raises(DataError, match=r"nothere\.npy: file not found"):
    load_trio(tmp_path, trio, image="nothere.npy")
  with pytest.raises(DataError, match=r"no labels file .*mirflickr25k-lall\.mat.*Get DCMH's FLICKR-25K\.mat"):
    load("mirflickr25k", tmp_path)
  with pytest.raises(DataError, match=r"raw_features\.mat.*wikiData\.mat"):
    load("wikipedia", tmp_path)
  with pytest.raises(DataError, match=r"missing_dir: data folder for 'iapr' not found"):
    load("iapr", tmp_path / "missing_dir")
  with pytest.raises(DataError, match=r"needs data_dir"):
    load("coco")


def test_missing_image_source_lists_the_downloads(tmp_path):
  write_lineage(tmp_path, "mirflickr25k", np.random.default_rng(0), 30, 24)
  expected = r"no image source.*mirflickr25k-iall-vgg\.mat.*mirflickr25k-iall\.mat.*image_features="
  with pytest.raises(DataError, match=expected):
    load("mirflickr25k", tmp_path, num_query=5, num_train=10)


def test_wikipedia_missing_list_file(tmp_path):
  write_wikipedia(tmp_path, np.random.default_rng(0))
  (tmp_path / "testset_txt_img_cat.list").unlink()
  with pytest.raises(DataError, match=r"testset_txt_img_cat\.list is missing"):
    load("wikipedia", tmp_path)


@pytest.mark.parametrize("fmt", ["npz", "mat5", "mat73"])
def test_missing_key_lists_the_keys_present(tmp_path, fmt):
  arrays = {"XAll": np.ones((3, 2)), "names": np.zeros((3, 1))}
  path = tmp_path / ("f.npz" if fmt == "npz" else "f.mat")
  if fmt == "npz":
    np.savez(path, **arrays)
  elif fmt == "mat5":
    scipy.io.savemat(path, arrays)
  else:
    save_v73(path, arrays)
  expected = r"f\.(npz|mat): no array named 'LAll' or 'L_tr'; the file holds .*'XAll'.*'names'"
  with pytest.raises(DataError, match=expected):
    io.read_matrix(path, ["LAll", "L_tr"])
  with pytest.raises(DataError, match=r"holds several arrays"):
    io.read_matrix(path)


def test_mismatched_row_counts_name_both_files(tmp_path, trio):
  np.save(tmp_path / "text.npy", np.zeros((29, 6)))
  with pytest.raises(DataError, match=r"labels\.npy has 30 rows but .*text\.npy has 29"):
    load_trio(tmp_path, trio)
  np.save(tmp_path / "text.npy", np.zeros((6, 30)))
  with pytest.raises(DataError, match=r"looks transposed"):
    load_trio(tmp_path, trio)


def test_lineage_mismatched_rows(tmp_path):
  rng = np.random.default_rng(1)
  write_lineage(tmp_path, "iapr-tc12", rng, 30, 255)
  scipy.io.savemat(tmp_path / "iapr-tc12-yall.mat", {"YAll": np.ones((31, 4), np.uint8)})
  expected = r"iapr-tc12-lall\.mat \[LAll\] has 30 rows but .*iapr-tc12-yall\.mat \[YAll\] has 31"
  with pytest.raises(DataError, match=expected):
    load("iapr", tmp_path, image="tags", num_query=5, num_train=10)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features(tmp_path, trio, bad):
  image = np.load(tmp_path / "image.npy")
  image[7, 2] = bad
  np.save(tmp_path / "image.npy", image)
  with pytest.raises(DataError, match=r"image\.npy: image features has 1 NaN or inf values \(first at row 7"):
    load_trio(tmp_path, trio)


def test_non_binary_labels(tmp_path, trio):
  labels = np.load(tmp_path / "labels.npy").astype(np.float64)
  labels[4, 1] = 2
  np.save(tmp_path / "labels.npy", labels)
  with pytest.raises(DataError, match=r"labels\.npy: labels must be 0/1 multi-hot, found values \[2\.0\]"):
    load_trio(tmp_path, trio)


def test_wrong_label_width_and_bad_class_codes(tmp_path):
  write_lineage(tmp_path, "mirflickr25k", np.random.default_rng(2), 30, 20)
  with pytest.raises(DataError, match=r"mirflickr25k-lall\.mat \[LAll\]: 20 label columns, but 'mirflickr25k' has 24"):
    load("mirflickr25k", tmp_path, image="tags")
  parts, _ = write_wikipedia(tmp_path, np.random.default_rng(2))
  scipy.io.savemat(tmp_path / "wikiData.mat", dict(parts, L_tr=np.full((40, 1), 11), L_te=np.ones((15, 1))))
  with pytest.raises(DataError, match=r"wikiData\.mat \[L_tr\]: class codes must be 1\.\.10, found \[11\]"):
    load("wikipedia", tmp_path, file="wikiData.mat")


def test_empty_label_rows_in_train(tmp_path, trio):
  labels = np.load(tmp_path / "labels.npy")
  labels[[5, 6]] = 0
  np.save(tmp_path / "labels.npy", labels)
  with pytest.raises(DataError, match=r"labels\.npy: 2 training items have no label"):
    load_trio(tmp_path, trio, split="dcmh", drop_unlabeled=False)
  assert load_trio(tmp_path, trio).split_info["dropped_unlabeled"] == 2


def test_non_numeric_arrays(tmp_path, trio):
  np.save(tmp_path / "text.npy", np.array([["a", "b"]] * 30))
  with pytest.raises(DataError, match=r"text\.npy: holds <U1 values, not numbers"):
    load_trio(tmp_path, trio)
  scipy.io.savemat(tmp_path / "words.mat", {"T": "some words"})
  with pytest.raises(DataError, match=r"words\.mat \[T\]: holds a MATLAB char array, not a numeric matrix"):
    io.read_matrix(tmp_path / "words.mat", "T")
  save_v73(tmp_path / "chars.mat", {"T": np.frombuffer(b"abc", np.uint8)[None]})
  import h5py
  with h5py.File(tmp_path / "chars.mat", "r+") as f:
    f["T"].attrs["MATLAB_class"] = np.bytes_("char")
  with pytest.raises(DataError, match=r"chars\.mat \[T\]: holds a MATLAB char array, not a numeric matrix"):
    io.read_matrix(tmp_path / "chars.mat", "T")
  with pytest.raises(DataError, match=r"chars\.mat \[T\]: holds a MATLAB char array"):
    io.open_rows(tmp_path / "chars.mat", "T")


def test_truncated_files(tmp_path):
  rng = np.random.default_rng(3)
  path = tmp_path / "mirflickr25k-iall.mat"
  save_v73(path, {"IAll": rng.integers(0, 256, (8, 8, 3, 40), dtype=np.uint8)})
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(DataError, match=r"mirflickr25k-iall\.mat: cannot read the file .*truncated"):
    io.read_matrix(path, "IAll")
  with pytest.raises(DataError, match=r"mirflickr25k-iall\.mat: cannot read the file"):
    io.open_rows(path, "IAll", pixels=True)
  np.save(tmp_path / "f.npy", rng.normal(size=(50, 20)))
  (tmp_path / "f.npy").write_bytes((tmp_path / "f.npy").read_bytes()[:1000])
  with pytest.raises(DataError, match=r"f\.npy: declares shape \(50, 20\) float64 .* but holds only 872 B .*truncated"):
    io.read_matrix(tmp_path / "f.npy")
  scipy.io.savemat(tmp_path / "v5.mat", {"X": rng.normal(size=(50, 20))})
  (tmp_path / "v5.mat").write_bytes((tmp_path / "v5.mat").read_bytes()[:3000])
  with pytest.raises(DataError, match=r"v5\.mat \[X\]: declares 7\.9 KiB but the file ends 2\.8 KiB later: truncated"):
    io.read_matrix(tmp_path / "v5.mat", "X")


def test_split_indices_out_of_range(tmp_path, trio):
  np.savez(tmp_path / "index.npz", query=np.arange(5), retrieval=np.arange(5, 30), train=np.array([5, 6, 30]))
  with pytest.raises(DataError, match=r"index\.npz \[train\]: split index 30 is out of range for 30 items"):
    load_trio(tmp_path, trio, indices="index.npz", num_query=None, num_train=None)
  np.savez(tmp_path / "index.npz", query=np.arange(5), train=np.arange(5, 10))
  with pytest.raises(DataError, match=r"index\.npz: no index vector 'retrieval'"):
    load_trio(tmp_path, trio, indices="index.npz", num_query=None, num_train=None)
  with pytest.raises(DataError, match=r"indices= gives the split, so num_query, num_train do not apply"):
    load_trio(tmp_path, trio, indices="index.npz")
  with pytest.raises(DataError, match=r"split sizes query=25 train=10 val=0 do not fit 30 items"):
    load_trio(tmp_path, trio, num_query=25)
  with pytest.raises(DataError, match=r"num_retrieval=8 does not fit: 25 items are outside the query set .* hold the 10 training items"):
    load_trio(tmp_path, trio, num_retrieval=8)
  with pytest.raises(DataError, match=r"num_retrieval=26 does not fit"):
    load_trio(tmp_path, trio, num_retrieval=26)
  image = np.zeros((4, 2))
  with pytest.raises(DataError, match=r"split 'query' has indices outside \[0, 4\)"):
    CrossModalData(image=image, text=image, labels=np.ones((4, 1)), query=np.array([4]), retrieval=np.arange(3),
                   train=np.arange(3), val=np.zeros(0, np.int64))


def test_unknown_names_and_options(tmp_path, trio):
  with pytest.raises(DataError, match=r"unknown dataset 'flickr'; choose from \[.*'mirflickr25k'"):
    load("flickr", tmp_path)
  with pytest.raises(DataError, match=r"unknown split rule 'sorted'"):
    load_trio(tmp_path, trio, split="sorted")
  with pytest.raises(DataError, match=r"unknown split rule 'sorted'"):
    load("wikipedia", tmp_path, split="sorted")
  with pytest.raises(DataError, match=r"tc=5"):
    load("nuswide", tmp_path, tc=5)
  write_lineage(tmp_path, "mirflickr25k", np.random.default_rng(0), 30, 24)
  with pytest.raises(DataError, match=r"image='vgg'"):
    load("mirflickr25k", tmp_path, image="vgg")
  with pytest.raises(DataError, match=r"option text=<path or path:key> is required"):
    load("features", tmp_path, image="image.npy", labels="labels.npy", num_query=5, num_train=10)
  with pytest.raises(DataError, match=r"give the split sizes num_query and num_train"):
    load("features", tmp_path, image="image.npy", text="text.npy", labels="labels.npy")
