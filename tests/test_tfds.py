"""TFDS writer and reader (ArrayRecord, no TensorFlow): round trips against the loaders."""

import importlib.util
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.io

tfds = pytest.importorskip("tensorflow_datasets")

from jxhash.data import core, load  # noqa: E402
from jxhash.data import tfds_reader as tr  # noqa: E402
from jxhash.data import tfds_writer as tw  # noqa: E402
from jxhash.errors import DataError, UserError  # noqa: E402
from test_data import multi_hot, save_v73  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script(name: str):
  """experiments/<name>.py as a module (scripts are files, not an importable package)."""
  spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


prepare_tfds = _script("prepare_tfds")

SPLIT_FIELDS = ("query", "retrieval", "train", "val")
SIZES = {"num_query": 4, "num_train": 6, "num_val": 2}


def assert_same_dataset(got, want):
  """Same name, split indices and arrays (values and dtypes); `got.image` may be a row source."""
  assert got.name == want.name
  for field in SPLIT_FIELDS:
    np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
  for field in ("text", "labels"):
    a, b = getattr(got, field), getattr(want, field)
    assert a.dtype == b.dtype and a.shape == b.shape, field
    np.testing.assert_array_equal(a, b, err_msg=field)
  image = core.read_rows(got.image, np.arange(got.num_items))
  assert image.dtype == want.image.dtype and image.shape == want.image.shape
  np.testing.assert_array_equal(image, want.image)


def write_mirflickr(directory, n=16, h=14, w=10, seed=0):
  """Small MIRFlickr files in the release formats: v5 -lall/-yall, a v7.3 H×W×3×N -iall stack,
  v5 -iall-vgg features. Row 5 has no label (the loaders drop it)."""
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  labels = multi_hot(rng, n, 24, empty_rows=(5,))
  tags = (rng.random((n, 30)) < 0.3).astype(np.uint8)
  pix = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
  feats = rng.normal(size=(n, 7))
  scipy.io.savemat(directory / "mirflickr25k-lall.mat", {"LAll": labels})
  scipy.io.savemat(directory / "mirflickr25k-yall.mat", {"YAll": tags})
  save_v73(directory / "mirflickr25k-iall.mat", {"IAll": pix.transpose(1, 2, 3, 0)})
  return {"labels": labels, "tags": tags, "pixels": pix, "features": feats}


@pytest.fixture
def counted_reads(monkeypatch):
  """Every record index the tfds data sources are asked for, in order."""
  from tensorflow_datasets.core.data_sources import base
  asked = []
  original = base.BaseDataSource.__getitems__

  def counting(self, keys):
    asked.extend(int(k) for k in keys)
    return original(self, keys)

  monkeypatch.setattr(base.BaseDataSource, "__getitems__", counting)
  return asked


def test_wikipedia_real_data_round_trip(wikipedia_dir, tmp_path, capsys):
  code = prepare_tfds.main(["--dataset", "wikipedia", "--manual-dir", str(wikipedia_dir), "--data-dir", str(tmp_path)])
  assert code == 0
  built = pathlib.Path(capsys.readouterr().out.strip().splitlines()[-1])
  assert built == tmp_path / "jxhash_wikipedia" / "features" / "1.0.0"
  records = sorted(p.name for p in built.iterdir() if "jxhash_wikipedia-items" in p.name)
  assert records and all(".array_record-" in name for name in records)

  for seed, options in ((3, {}), (3, {"num_val": 100}), (8, {"num_val": 100})):
    got = tr.load_tfds(built, seed=seed, **options)
    want = load("wikipedia", wikipedia_dir, seed=seed, **options)
    assert_same_dataset(got, want)
    assert got.sizes() == want.sizes()
    assert got.fingerprint() == want.fingerprint()  # the same arrays and indices, whatever the container
    assert got.split_info["rule"] == "official" and got.split_info["source"] == f"tfds:{built}"
  assert got.image.dtype == np.float32 and got.image.shape == (2866, 128)
  assert got.sizes() == {"query": 693, "retrieval": 2173, "train": 2073, "val": 100}
  # The registered loader, from the tfds root folder (the dataset found by name).
  via_registry = load("tfds", tmp_path, dataset="wikipedia", seed=3)
  assert_same_dataset(via_registry, load("wikipedia", wikipedia_dir, seed=3))


def test_mirflickr_pixels_are_read_lazily_and_match_the_loader(tmp_path, counted_reads):
  raw = write_mirflickr(tmp_path / "raw")
  built = tw.prepare("mirflickr25k", tmp_path / "raw", tmp_path / "tfds")  # auto: only pixels are there
  assert built == tmp_path / "tfds" / "jxhash_mirflickr25k" / "pixels" / "1.0.0"

  columns = tr.read_tfds(built)
  image = columns.image
  assert isinstance(image, tr.TfdsRows) and core.is_row_source(image)
  counted_reads.clear()
  assert image.shape == (16, 14, 10, 3) and image.ndim == 4 and image.dtype == np.uint8 and len(image) == 16
  assert counted_reads == []  # the shape came from metadata and one record, not from reading all

  rows = np.array([13, 2, 2, 9, 0, 13, 7])
  np.testing.assert_array_equal(image[rows], raw["pixels"][rows])
  assert sorted(counted_reads) == sorted(set(rows.tolist()))  # only those records, each decoded once
  np.testing.assert_array_equal(image[::-1], raw["pixels"][::-1])
  np.testing.assert_array_equal(image[4], raw["pixels"][4])
  np.testing.assert_array_equal(image[np.array([3, 1])[:, None]], raw["pixels"][[[3], [1]]])
  assert image[np.zeros(0, np.int64)].shape == (0, 14, 10, 3)
  np.testing.assert_array_equal(columns.labels, raw["labels"])
  assert columns.text.dtype == np.uint8  # the tags' stored dtype, as the loader returns them
  np.testing.assert_array_equal(columns.text, raw["tags"])

  for seed, split in ((5, "random"), (0, "dcmh")):
    got = tr.load_tfds(built, seed=seed, split=split, **SIZES)
    want = load("mirflickr25k", tmp_path / "raw", seed=seed, split=split, **SIZES)
    assert not got.image_in_memory and got.split_info["dropped_unlabeled"] == 1
    assert_same_dataset(got, want)
    assert got.split_info["options"] == dict(tr.OPTIONS.defaults(), **SIZES, num_retrieval=None)
  # A lazy build's fingerprint: the folder's files and sampled rows, stable across loads.
  assert tr.load_tfds(built, **SIZES).fingerprint() == tr.load_tfds(built, **SIZES).fingerprint()
  assert tr.load_tfds(built, **SIZES).fingerprint() != tr.load_tfds(built, **dict(SIZES, num_val=1)).fingerprint()


@pytest.mark.slow
def test_dcmh_streams_its_training_batches_from_a_pixel_build(tmp_path):
  import dataclasses

  from jxhash.training import evaluation
  from jxhash.training import runstate
  from jxhash.training import trainer
  from jxhash.methods import get_method

  write_mirflickr(tmp_path / "raw", n=40, h=224, w=224)
  ds = tr.load_tfds(tw.prepare("mirflickr25k", tmp_path / "raw", tmp_path / "tfds"), num_query=8, num_train=16,
                    num_val=4)
  spec = get_method("dcmh")
  config = dataclasses.replace(spec.Config(), bits=16, epochs=2, batch_size=8, text_hidden=(16,),
                               cnn_channels=(6, 8, 8, 8, 8), cnn_fc_width=16)
  result = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=1))
  assert all(np.isfinite(h["image/loss"]) and "val_map" in h for h in result.history)
  codes = evaluation.encode(spec, runstate.seed_slice(result.state.model, 0), "image", ds.image, transform=lambda x: x)
  assert codes.shape == (39, 16) and set(np.unique(codes)) <= {-1, 1}


def test_features_config_and_finding_builds_by_name(tmp_path):
  raw = write_mirflickr(tmp_path / "raw")
  scipy.io.savemat(tmp_path / "raw" / "mirflickr25k-iall-vgg.mat", {"XAll": raw["features"]})
  root = tmp_path / "tfds"
  features = tw.prepare("mirflickr25k", tmp_path / "raw", root)  # auto prefers features, as the loader does
  pixels = tw.prepare("mirflickr25k", tmp_path / "raw", root, image="pixels")
  assert features.parent.name == "features" and pixels.parent.name == "pixels"

  got = tr.load_tfds(root, dataset="mirflickr25k/features", seed=2, **SIZES)
  assert isinstance(got.image, np.ndarray) and got.image.dtype == np.float32
  assert_same_dataset(got, load("mirflickr25k", tmp_path / "raw", image="features", seed=2, **SIZES))
  assert tr.find_version_dir(root / "jxhash_mirflickr25k" / "pixels") == pixels
  with pytest.raises(DataError, match="several built datasets.*features.*pixels"):
    tr.load_tfds(root, dataset="mirflickr25k")
  with pytest.raises(DataError, match="no built TFDS dataset for 'iapr'"):
    tr.load_tfds(root, dataset="iapr")


def test_nuswide_and_iapr_builders(tmp_path):
  rng = np.random.default_rng(4)
  raw = tmp_path / "raw"
  raw.mkdir()
  for prefix, classes, n in (("nus-wide-tc10", 10, 20), ("iapr-tc12", 255, 18)):
    scipy.io.savemat(raw / f"{prefix}-lall.mat", {"LAll": multi_hot(rng, n, classes)})
    save_v73(raw / f"{prefix}-yall.mat", {"YAll": (rng.random((n, 12)) < 0.3).astype(np.uint8)})
    np.save(raw / f"{prefix}-xall-vgg.npy", rng.normal(size=(n, 5)).astype(np.float32))
  built = tw.prepare("nuswide", raw, tmp_path / "tfds", tc=10)
  assert built.parent.name == "tc10-features"
  got = tr.load_tfds(built, seed=1, **SIZES)
  assert got.split_info["tc"] == 10
  assert_same_dataset(got, load("nuswide", raw, tc=10, seed=1, **SIZES))
  built = tw.prepare("iapr", raw, tmp_path / "tfds")
  assert_same_dataset(tr.load_tfds(built, seed=1, **SIZES), load("iapr", raw, seed=1, **SIZES))


def test_defaults_follow_the_loaders(tmp_path):
  rng = np.random.default_rng(5)
  raw = tmp_path / "raw"
  raw.mkdir()
  scipy.io.savemat(raw / "iapr-tc12-lall.mat", {"LAll": multi_hot(rng, 7600, 255)})
  scipy.io.savemat(raw / "iapr-tc12-yall.mat", {"YAll": (rng.random((7600, 3)) < 0.5).astype(np.uint8)})
  np.save(raw / "iapr-tc12-xall-vgg.npy", rng.normal(size=(7600, 2)).astype(np.float32))
  got = tr.load_tfds(tw.prepare("iapr", raw, tmp_path / "tfds"))
  assert got.sizes() == {"query": 2000, "retrieval": 5600, "train": 5000, "val": 500}
  assert_same_dataset(got, load("iapr", raw))


@pytest.mark.slow
def test_no_tensorflow_is_imported(tmp_path):
  write_mirflickr(tmp_path / "raw")
  script = textwrap.dedent(f"""
      import sys
      import jxhash, jxhash.data
      assert "tensorflow_datasets" not in sys.modules, "import jxhash.data imported tensorflow_datasets"
      try:
        jxhash.data.load("tfds", "nowhere", num_querry=4)
      except jxhash.data.DataError as e:
        assert "unknown option 'num_querry'" in str(e)
      assert "tensorflow_datasets" not in sys.modules, "a bad tfds option imported tensorflow_datasets"
      from jxhash.data.tfds_writer import prepare
      built = prepare("mirflickr25k", {str(tmp_path / 'raw')!r}, {str(tmp_path / 'tfds')!r})
      data = jxhash.data.load("tfds", built, num_query=4, num_train=6, num_val=2)
      assert data.subset("train")[0].shape == (6, 14, 10, 3)
      assert "tensorflow_datasets" in sys.modules
      print("tensorflow imported:", "tensorflow" in sys.modules)
  """)
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "tensorflow imported: False" in done.stdout


def test_missing_tensorflow_datasets_is_a_user_error(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes `import tensorflow_datasets` fail
  monkeypatch.delitem(sys.modules, "jxhash.data.tfds_reader")
  with pytest.raises(UserError, match=r'pip install "jxhash\[tfds\]"'):
    load("tfds", tmp_path)


def test_errors_name_the_folder_or_file(tmp_path, capsys):
  missing = tmp_path / "nowhere"
  with pytest.raises(DataError, match=f"{missing}: data folder for 'mirflickr25k' not found"):
    tw.prepare("mirflickr25k", missing, tmp_path / "tfds")
  raw = tmp_path / "raw"
  write_mirflickr(raw)
  (raw / "mirflickr25k-yall.mat").unlink()
  with pytest.raises(DataError, match=f"{raw}: no tags file for 'mirflickr25k': expected mirflickr25k-yall.mat"):
    tw.prepare("mirflickr25k", raw, tmp_path / "tfds")
  write_mirflickr(raw)
  (raw / "mirflickr25k-iall.mat").unlink()
  with pytest.raises(DataError, match=f"{raw}: no image source .*mirflickr25k-iall.mat"):
    tw.prepare("mirflickr25k", raw, tmp_path / "tfds", image="pixels")
  (raw / "raw_features.mat").write_bytes(b"")
  with pytest.raises(DataError, match="trainset_txt_img_cat.list, testset_txt_img_cat.list is missing"):
    tw.prepare("wikipedia", raw, tmp_path / "tfds")
  with pytest.raises(DataError, match="precomputed features only"):
    tw.prepare("wikipedia", raw, tmp_path / "tfds", image="pixels")
  with pytest.raises(DataError, match="no TFDS builder for dataset 'coco'"):
    tw.prepare("coco", raw, tmp_path / "tfds")
  assert not (tmp_path / "tfds").exists()  # checked before tfds starts: nothing was written
  # A stack that does not match the labels fails inside the build, still as a DataError, and
  # leaves no version folder (a later prepare starts afresh).
  write_mirflickr(raw)
  save_v73(raw / "mirflickr25k-iall.mat", {"IAll": np.zeros((14, 10, 3, 15), np.uint8)})
  with pytest.raises(DataError, match=r"mirflickr25k-iall.mat \[IAll\]: cannot read shape .* with 16 items"):
    tw.prepare("mirflickr25k", raw, tmp_path / "tfds")
  assert not list((tmp_path / "tfds").glob("*/*/1.0.0"))
  with pytest.raises(DataError, match=f"{tmp_path}: no built TFDS dataset here"):
    tr.load_tfds(tmp_path)

  code = prepare_tfds.main(["--dataset", "iapr", "--manual-dir", str(missing), "--data-dir", str(tmp_path / "t")])
  err = capsys.readouterr().err
  assert code == 2 and err.startswith(f"error: {missing}: data folder for 'iapr' not found") and err.count("\n") == 1


def test_wikipedia_options_that_do_not_apply(tmp_path):
  from test_data import write_wikipedia
  write_wikipedia(tmp_path / "raw", np.random.default_rng(0))
  built = tw.prepare("wikipedia", tmp_path / "raw", tmp_path / "tfds")
  assert_same_dataset(tr.load_tfds(built, split="dcmh"), load("wikipedia", tmp_path / "raw", split="dcmh"))
  with pytest.raises(DataError, match="official split.*num_query"):
    tr.load_tfds(built, num_query=10)
  with pytest.raises(DataError, match="unknown split rule 'kfold'"):
    tr.load_tfds(built, split="kfold")


def test_output_folder_is_checked_before_the_build(tmp_path):
  write_mirflickr(tmp_path / "raw")
  (tmp_path / "plain").write_text("a file, not a folder")
  with pytest.raises(UserError, match=r"TFDS data folder .*plain/tfds lies under .*plain, which is a file"):
    tw.prepare("mirflickr25k", tmp_path / "raw", tmp_path / "plain" / "tfds")


def test_former_module_name_still_exports_the_public_names():
  from jxhash.data import tfds_builders
  assert tfds_builders.prepare is tw.prepare and tfds_builders.load_tfds is tr.load_tfds
  for name in ("TfdsRows", "TfdsColumns", "read_tfds", "find_version_dir", "BUILDERS", "SPLIT", "FORMAT"):
    assert hasattr(tfds_builders, name)
