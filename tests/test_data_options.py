"""Loader option schemas (checks, CLI parsing, docs in sync), split_info and data fingerprints."""

import ast
import os
import pathlib
import sys
import time

import numpy as np
import pytest

from conftest import TINY_SPLIT
from jxhash import fileio
from jxhash.data import LOADERS, SCHEMAS, CrossModalData, load, options, parse_options
from jxhash.data.core import RowSource, RowSubset, row_index
from jxhash.errors import DataError
from test_data import multi_hot, save_v73, write_lineage

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "data.md"
BEGIN, END = "<!-- BEGIN OPTIONS", "<!-- END OPTIONS -->"
SMALL = TINY_SPLIT


# --- schemas --------------------------------------------------------------------------------------


def test_every_loader_has_a_schema_whose_defaults_check():
  assert set(SCHEMAS) == set(LOADERS)
  for name, schema in SCHEMAS.items():
    assert schema.dataset == name
    assert schema.check({}) == schema.defaults()
    for option in schema:
      assert option.doc and option.kind in options.KINDS, (name, option.name)


def test_library_values_are_type_and_range_checked():
  load("synthetic", num_items=np.int64(300), num_query=40, num_train=96, num_val=np.uint8(24), noise=1)
  cases = [({"num_items": 300.0}, r"option num_items=300\.0 is not an integer; num_items is int >= 1, default 2000"),
           ({"num_items": True}, r"option num_items=True is not an integer"),
           ({"noise": "0.5"}, r"option noise='0\.5' is not a number"),
           ({"noise": float("nan")}, r"option noise=nan is not finite"),
           ({"noise": -1.0}, r"option noise=-1\.0 is out of range; noise is float >= 0"),
           ({"image_size": 5000}, r"option image_size=5000 is out of range; image_size is int in \[0, 1024\]"),
           ({"num_item": 5}, r"unknown option 'num_item' \(did you mean num_items\?\); valid options: data_seed, "
                             r"feature_scale, image_dim, image_size, max_labels, noise, num_items, num_labels, num_query, num_train, "
                             r"num_val, text_density, text_dim, text_tokens$"),
           ({"max_labels": 11}, r"max_labels=11 exceeds num_labels=10"),
           ({"num_items": 100}, r"num_query=200 \+ num_train=1000 do not fit num_items=100"),
           ({"num_items": 10**9, "num_query": 1, "num_train": 1}, r"dataset 'synthetic': generating 1000000000 items .* "
                                                                   r"over the memory budget")]
  for given, message in cases:
    with pytest.raises(DataError, match=message):
      load("synthetic", **given)
  with pytest.raises(DataError, match=r"dataset 'mirflickr25k': unknown option 'tc'"):
    load("mirflickr25k", "nowhere", tc=10)
  with pytest.raises(DataError, match=r"dataset 'nuswide': option tc=5 is not a valid choice; tc is one of 21, 10"):
    load("nuswide", "nowhere", tc=5)
  with pytest.raises(DataError, match=r"option image='vgg' is not a valid choice; image is one of 'auto', 'features'"):
    load("coco", "nowhere", image="vgg")
  with pytest.raises(DataError, match=r"option image_features=3 is not a path"):
    load("iapr", "nowhere", image_features=3)
  with pytest.raises(DataError, match=r"split seed -1 for 'synthetic': must be an integer >= 0"):
    load("synthetic", seed=-1)
  with pytest.raises(DataError, match=r"unknown split rule 'kfold' for 'synthetic'"):
    load("synthetic", split="kfold")


def test_loader_called_directly_checks_too():
  from jxhash.data.wikipedia import load_wikipedia
  with pytest.raises(DataError, match=r"dataset 'wikipedia': unknown option 'num_query'; valid options: file, num_val"):
    load_wikipedia("nowhere", num_query=5)


def test_name_is_an_option_of_features_only(tmp_path):
  rng = np.random.default_rng(0)
  np.save(tmp_path / "x.npy", rng.normal(size=(20, 3)))
  np.save(tmp_path / "l.npy", multi_hot(rng, 20, 3))
  data = load("features", tmp_path, image="x.npy", text="x.npy", labels="l.npy", num_query=4, num_train=8, name="mine")
  assert data.name == "mine" and data.split_info["options"]["name"] == "mine"
  with pytest.raises(DataError, match=r"dataset 'synthetic': unknown option 'name'"):
    load("synthetic", name="x")


def test_parse_options_types():
  assert parse_options("synthetic", ["num_items=300", "noise=1e-2", "image_size= 8"]) == {
      "num_items": 300, "noise": 0.01, "image_size": 8}
  for text, value in (("true", True), ("YES", True), ("1", True), ("false", False), ("no", False), ("0", False)):
    assert parse_options("mirflickr25k", [f"stream_pixels={text}"]) == {"stream_pixels": value}
  assert parse_options("mirflickr25k", ["num_retrieval=none", "image_features=feats.npz:X"]) == {
      "num_retrieval": None, "image_features": "feats.npz:X"}
  assert parse_options("features", ["image=a b.npy", "index_base=1"]) == {"image": "a b.npy", "index_base": 1}
  bad = [("synthetic", "num_items=abc", r"option num_items='abc' is not an integer; num_items is int >= 1, default 2000"),
         ("synthetic", "num_val=50x", r"option num_val='50x' is not an integer"),
         ("synthetic", "num_items=2.0", r"option num_items='2\.0' is not an integer"),
         ("synthetic", "num_items=1e3", r"option num_items='1e3' is not an integer"),
         ("synthetic", "max_labels=0", r"option max_labels=0 is out of range; max_labels is int >= 1"),
         ("synthetic", "image_dim=0", r"option image_dim=0 is out of range"),
         ("synthetic", "noise=inf", r"option noise=inf is not finite"),
         ("synthetic", "name=x", r"unknown option 'name'; valid options: data_seed, feature_scale, image_dim"),
         ("synthetic", "seed=3", r"'seed' is not a loader option; give it to jxhash\.data\.load as seed="),
         ("synthetic", "num_items", r"data option 'num_items' is not key=value; valid options: data_seed"),
         ("synthetic", "=3", r"data option '=3' is not key=value"),
         ("mirflickr25k", "stream_pixels=maybe", r"option stream_pixels='maybe' is not a bool \(true/false, 1/0, yes/no\)"),
         ("mirflickr25k", "num_query=none", r"option num_query='none' is not an integer"),
         ("nuswide", "tc=11", r"option tc=11 is not a valid choice; tc is one of 21, 10"),
         ("features", "index_base=2", r"option index_base=2 is not a valid choice"),
         ("tfds", "num_val=-1", r"option num_val=-1 is out of range; num_val is int >= 0 or none"),
         ("nosuch", "a=1", r"unknown dataset 'nosuch'; choose from")]
  for name, pair, message in bad:
    with pytest.raises(DataError, match=message):
      parse_options(name, [pair])
  with pytest.raises(DataError, match=r"option num_val is given twice"):
    parse_options("synthetic", ["num_val=1", "num_val=2"])


def test_tuple_options_are_comma_separated():
  schema = options.Schema("demo", [options.Option("sizes", "tuple", (1, 2), "sizes", low=1),
                                   options.Option("names", "tuple", (), "names", item="str")])
  assert schema.parse(["sizes=3, 4,5", "names=a,b"]) == {"sizes": (3, 4, 5), "names": ("a", "b")}
  assert schema.check({"sizes": [7]})["sizes"] == (7,)
  with pytest.raises(DataError, match=r"option sizes='3,x' is not an integer"):
    schema.parse(["sizes=3,x"])
  with pytest.raises(DataError, match=r"option sizes=\(3, 0\) is out of range"):
    schema.check({"sizes": (3, 0)})


def test_docs_tables_match_the_schemas():
  text = DOCS.read_text()
  begin = text.index("\n", text.index(BEGIN)) + 1
  end = text.index(END)
  generated = options.markdown(SCHEMAS)
  if os.environ.get("JXHASH_REGENERATE_DOCS") == "1":
    fileio.atomic_write(DOCS, text[:begin] + generated + text[end:], what="docs/data.md")
    text = DOCS.read_text()
  assert text[begin:text.index(END)] == generated, "docs/data.md is stale: JXHASH_REGENERATE_DOCS=1 regenerates it"


def test_data_modules_use_no_private_names_of_other_modules_nor_signatures():
  for path in sorted((ROOT / "jxhash" / "data").glob("*.py")):
    source = path.read_text()
    assert "inspect.signature" not in source, path.name
    tree = ast.parse(source)
    modules = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jxhash"):
        private = [a.name for a in node.names if a.name.startswith("_")]
        assert not private, f"{path.name} imports {private} from {node.module}"
        modules.update(a.asname or a.name for a in node.names)
    for node in ast.walk(tree):
      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
        assert not node.attr.startswith("_"), f"{path.name} uses {node.value.id}.{node.attr}"


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize("pair, message", [
    ("num_items=abc", "option num_items='abc' is not an integer"),
    ("max_labels=0", "option max_labels=0 is out of range"),
    ("name=x", "unknown option 'name'; valid options: data_seed, feature_scale, image_dim, image_size"),
])
def test_run_cli_data_option_errors(tmp_path, capsys, pair, message):
  from jxhash.commands import train
  code = train.main(["--data-option", pair, "--no-progress", "--no-checkpoint", "--out", str(tmp_path / "r.json")])
  err = capsys.readouterr().err
  assert code == 2 and err.startswith(f"error: dataset 'synthetic': {message}") and err.count("\n") == 1, err
  assert not (tmp_path / "r.json").exists()


# --- the shared row reader ------------------------------------------------------------------------


class Counting(RowSource):
  """Rows i*10 .. i*10+9 of a 7-row source, recording what was read."""

  def __init__(self):
    self.shape, self.dtype, self.reads = (7, 2), np.dtype(np.int64), []

  def _read_sorted(self, rows):
    self.reads.append(rows.tolist())
    return np.stack([rows * 10, rows * 10 + 1], axis=1)


def test_row_source_indexing_is_numpy_indexing():
  full = np.stack([np.arange(7) * 10, np.arange(7) * 10 + 1], axis=1)
  for index in (3, -1, slice(None), slice(5, 1, -2), [6, 0, 6, 2], np.array([[1], [4]]), np.arange(7) % 2 == 0,
                np.array([], np.int64), []):
    source = Counting()
    np.testing.assert_array_equal(source[index], full[index], err_msg=repr(index))
    assert all(r == sorted(set(r)) for r in source.reads)  # each read distinct and increasing
  source = Counting()
  source[[5, 1, 5, 1]]
  assert source.reads == [[1, 5]]
  for bad, error in ((7, IndexError), (-8, IndexError), ([0, 9], IndexError), (np.ones(3, bool), IndexError),
                     (1.5, TypeError), ((1, 2), TypeError)):
    with pytest.raises(error):
      Counting()[bad]
  assert row_index(np.array([-1, 0]), 7).tolist() == [6, 0]
  subset = RowSubset(Counting(), [6, 2, 4])
  np.testing.assert_array_equal(subset[[2, 0]], full[[4, 6]])


# --- split_info and fingerprints ------------------------------------------------------------------


SYNTHETIC_CHANGES = {"num_items": 301, "image_dim": 17, "text_dim": 9, "num_labels": 6, "max_labels": 2, "noise": 0.25,
                     "num_query": 41, "num_train": 97, "num_val": 25, "data_seed": 1, "image_size": 8,
                     "text_density": 0.5, "feature_scale": 2.0, "text_tokens": 5}


def test_every_synthetic_option_changes_split_info_and_fingerprint():
  assert set(SYNTHETIC_CHANGES) == set(SCHEMAS["synthetic"].names)  # a new option must be added here
  base = load("synthetic", **SMALL)
  assert base.split_info["options"] == dict(SCHEMAS["synthetic"].defaults(), **SMALL)
  seen = {base.fingerprint()}
  infos = [base.split_info]
  for key, value in SYNTHETIC_CHANGES.items():
    data = load("synthetic", **dict(SMALL, **{key: value}))
    assert data.split_info["options"][key] == value
    assert data.split_info not in infos, key
    assert data.fingerprint() not in seen, key
    seen.add(data.fingerprint())
    infos.append(data.split_info)
  again = load("synthetic", **SMALL)
  assert again.fingerprint() == base.fingerprint() and again is not base
  assert load("synthetic", seed=1, **SMALL).fingerprint() != base.fingerprint()  # the split seed moves indices


def test_fingerprint_follows_one_byte_of_a_training_row(tmp_path):
  rng = np.random.default_rng(1)
  image, text = rng.normal(size=(40, 6)).astype(np.float32), rng.random((40, 5)).astype(np.float32)
  np.save(tmp_path / "image.npy", image)
  np.save(tmp_path / "text.npy", text)
  np.save(tmp_path / "labels.npy", multi_hot(rng, 40, 3))
  files = {"image": "image.npy", "text": "text.npy", "labels": "labels.npy", "num_query": 8, "num_train": 16}
  first = load("features", tmp_path, **files)
  assert load("features", tmp_path, **files).fingerprint() == first.fingerprint()
  row = int(first.train[3])
  for name, array in (("image", image), ("text", text)):
    changed = array.copy()
    changed.view(np.uint8).reshape(40, -1)[row, 0] ^= 1  # one bit of one byte of a training row
    np.save(tmp_path / f"{name}.npy", changed)
    assert load("features", tmp_path, **files).fingerprint() != first.fingerprint(), name
    np.save(tmp_path / f"{name}.npy", array)
  assert load("features", tmp_path, **files).fingerprint() == first.fingerprint()
  # The same arrays in Fortran order (as loadmat gives them) hash the same.
  fortran = CrossModalData(image=np.asfortranarray(first.image), text=np.asfortranarray(first.text), labels=first.labels,
                           query=first.query, retrieval=first.retrieval, train=first.train, val=first.val)
  assert fortran.fingerprint() == first.fingerprint()


def test_lineage_options_change_split_info_and_fingerprint(tmp_path):
  rng = np.random.default_rng(2)
  labels, tags = write_lineage(tmp_path, "mirflickr25k", rng, 60, 24, empty_rows=(7,))
  feats = rng.normal(size=(60, 8)).astype(np.float32)
  np.save(tmp_path / "vgg.npy", feats)
  np.savez(tmp_path / "two.npz", a=feats, b=feats[::-1].copy())
  pixels = rng.integers(0, 256, size=(60, 6, 5, 3), dtype=np.uint8)
  save_v73(tmp_path / "mirflickr25k-iall.mat", {"IAll": pixels.transpose(1, 2, 3, 0)})
  base = {"num_query": 10, "num_train": 20, "num_val": 5, "image": "tags"}
  variants = [{}, {"num_query": 11}, {"num_train": 21}, {"num_val": 4}, {"num_retrieval": 40},
              {"image": "auto", "image_features": "vgg.npy"}, {"image": "auto", "image_features": "two.npz", "image_key": "b"},
              {"drop_unlabeled": False}, {"image": "pixels"}, {"image": "pixels", "stream_pixels": True}]
  # Row 7 has no label: kept (outside train, with seed 0) only by drop_unlabeled=false.
  loaded = [load("mirflickr25k", tmp_path, **dict(base, **change)) for change in variants]
  assert loaded[7].num_items == 60 and loaded[0].num_items == 59
  infos = [d.split_info for d in loaded]
  assert all(infos.count(i) == 1 for i in infos)
  prints = [d.fingerprint() for d in loaded]
  assert len(set(prints)) == len(prints)
  for data, change in zip(loaded, variants):
    for key, value in change.items():
      assert data.split_info["options"][key] == value


def test_streamed_stack_fingerprint_covers_the_file(tmp_path):
  rng = np.random.default_rng(3)
  write_lineage(tmp_path, "mirflickr25k", rng, 30, 24)
  pixels = rng.integers(0, 256, size=(30, 6, 5, 3), dtype=np.uint8)
  stack = tmp_path / "mirflickr25k-iall.mat"
  save_v73(stack, {"IAll": pixels.transpose(1, 2, 3, 0)})
  opts = {"num_query": 5, "num_train": 10, "num_val": 3, "image": "pixels", "stream_pixels": True}
  first = load("mirflickr25k", tmp_path, **opts).fingerprint()
  assert load("mirflickr25k", tmp_path, **opts).fingerprint() == first
  eager = load("mirflickr25k", tmp_path, **dict(opts, stream_pixels=False)).fingerprint()
  assert eager != first  # documented: identity + sample rows, not every byte
  stat = stack.stat()
  os.utime(stack, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  assert load("mirflickr25k", tmp_path, **opts).fingerprint() != first
  changed = pixels.copy()
  changed[29, 0, 0, 0] ^= 1  # the last row is always sampled
  save_v73(stack, {"IAll": changed.transpose(1, 2, 3, 0)})
  os.utime(stack, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert load("mirflickr25k", tmp_path, **opts).fingerprint() not in (first, eager)


@pytest.mark.slow
def test_fingerprint_time_on_mirflickr_sized_arrays():
  rng = np.random.default_rng(0)
  n = 20015
  image = rng.standard_normal((n, 4096), dtype=np.float32)
  text = (rng.random((n, 1386)) < 0.003).astype(np.float32)
  labels = (rng.random((n, 24)) < 0.15).astype(np.uint8)
  labels[:, 0] = 1
  order = rng.permutation(n)
  data = CrossModalData(image=image, text=text, labels=labels, query=order[:2000], retrieval=order[2000:],
                        train=order[2000:12000], val=order[-500:])
  start = time.perf_counter()
  digest = data.fingerprint()
  elapsed = time.perf_counter() - start
  print(f"fingerprint of {image.nbytes + text.nbytes + labels.nbytes:,} bytes: {elapsed:.2f} s")
  assert elapsed < 5.0
  start = time.perf_counter()
  assert data.fingerprint() == digest and time.perf_counter() - start < 0.01  # cached
