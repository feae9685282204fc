"""jxhash.extract: rows against torchvision, streaming and resuming, and one-line input errors.

The quick tests run the command on a stand-in encoder (a fixed linear map of the ImageNet-
preprocessed pixels, its weights in a .npy file) registered for the test; the slow ones extract
with AlexNet and ResNet-34 (random weights saved by torch) and compare every row with
torchvision's model on torchvision's transforms of the same files, and kill a real run midway.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import clip_reference

from jxhash import extract as ex
from jxhash.nets import transforms

SIZES = [(70, 90), (257, 199), (64, 64), (300, 90), (120, 121)]


def _write_images(folder, sizes=SIZES, seed=0):
  from PIL import Image
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  names = []
  for i, (h, w) in enumerate(sizes):
    name = f"img{i:02d}." + ("png" if i % 2 else "jpg")
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    names.append(name)
  (folder / "notes.txt").write_text("not an image, skipped")
  (folder / ".hidden.png").write_bytes(b"skipped too")
  return names


# ---------------------------------------------------------------------------------------------
# A stand-in encoder: pixels (ImageNet transform) -> 8 linear features.


def _tiny_load(path):
  weights = np.load(path)

  def encode(x):
    return np.asarray(x, np.float64).reshape(len(x), -1)[:, ::997] @ weights
  return ex.Model(transforms.imagenet, encode, "tiny: ImageNet eval transform")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
  monkeypatch.setitem(ex.ENCODERS, "tiny", ex.Encoder("tiny", "a linear map", "a .npy", _tiny_load))
  weights = tmp_path / "tiny.npy"
  columns = len(range(0, 224 * 224 * 3, 997))
  np.save(weights, np.random.default_rng(0).standard_normal((columns, 8)))
  folder = tmp_path / "images"
  names = _write_images(folder)
  expected = _tiny_load(weights).encode_images(np.stack([transforms.imagenet(transforms.open_image(folder / n))
                                                         for n in names]))
  return weights, folder, names, expected.astype(np.float32)


def test_extract_writes_rows_ids_and_record(tiny, tmp_path):
  weights, folder, names, expected = tiny
  out = tmp_path / "out" / "f.npz"
  assert ex.main(["--encoder", "tiny", "--weights", str(weights), "--images", str(folder), "--out", str(out),
                  "--batch-size", "2", "--no-progress"]) == 0
  features, ids, record = ex.read_features(out)
  assert features.dtype == np.float32 and features.shape == (5, 8)
  np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-6)
  assert list(ids) == [n.rsplit(".", 1)[0] for n in names]
  assert record["encoder"] == "tiny" and record["inputs"]["count"] == 5
  import hashlib
  assert record["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
  assert not (tmp_path / "out" / "f.npz.partial").exists()
  # the output is a features matrix jxhash's own loader reads
  from jxhash import data
  np.save(tmp_path / "text.npy", np.ones((5, 3), np.float32))
  np.save(tmp_path / "labels.npy", np.ones((5, 2), np.uint8))
  ds = data.load("features", image=f"{out}:features", text=str(tmp_path / "text.npy"),
                 labels=str(tmp_path / "labels.npy"), num_query=1, num_train=2)
  np.testing.assert_array_equal(np.asarray(ds.image), features)


def test_resume_after_stop_any_batch_size(tiny, tmp_path):
  weights, folder, _, expected = tiny
  out = tmp_path / "f.npz"
  first = ex.extract("tiny", weights, out, images=folder, batch_size=2, progress=False, max_batches=1)
  assert not first["finished"] and first["rows"] == 2 and not out.exists()
  partial = tmp_path / "f.npz.partial"
  assert sorted(p.name for p in partial.iterdir()) == ["progress.json", "rows-0000000000-0000000002.npy"]
  # a rerun with another batch size continues from row 2
  second = ex.extract("tiny", weights, out, images=folder, batch_size=3, progress=False)
  assert second["finished"] and second["resumed_from"] == 2
  np.testing.assert_allclose(ex.read_features(out)[0], expected, rtol=1e-6, atol=1e-6)
  assert not partial.exists()
  # a finished output is not redone
  assert ex.main(["--encoder", "tiny", "--weights", str(weights), "--images", str(folder), "--out", str(out)]) == 2



def test_ctrl_c_keeps_finished_batches(tiny, tmp_path, monkeypatch, capsys):
  weights, folder, _, expected = tiny
  calls = []

  def interrupted_load(path):
    model = _tiny_load(path)
    encode = model.encode_images

    def encode_or_stop(x):
      calls.append(len(x))
      if len(calls) == 2:
        raise KeyboardInterrupt
      return encode(x)
    model.encode_images = encode_or_stop
    return model

  monkeypatch.setitem(ex.ENCODERS, "tiny", ex.Encoder("tiny", "a linear map", "a .npy", interrupted_load))
  out = tmp_path / "f.npz"
  args = ["--encoder", "tiny", "--weights", str(weights), "--images", str(folder), "--out", str(out),
          "--batch-size", "2", "--no-progress"]
  assert ex.main(args) == 130
  err = capsys.readouterr().err
  assert "after 2 of 5 rows" in err and "rerun the same command" in err and err.count("\n") == 1
  assert ex.main(args) == 0
  np.testing.assert_allclose(ex.read_features(out)[0], expected, rtol=1e-6, atol=1e-6)
  assert calls == [2, 2, 2, 2]  # the interrupted batch is redone, the finished one is not

def test_partial_of_other_inputs_is_refused_unless_overwrite(tiny, tmp_path, capsys):
  weights, folder, _, expected = tiny
  out = tmp_path / "f.npz"
  ex.extract("tiny", weights, out, images=folder, batch_size=2, progress=False, max_batches=1)
  other = tmp_path / "other"
  _write_images(other, SIZES[:3], seed=1)
  args = ["--encoder", "tiny", "--weights", str(weights), "--images", str(other), "--out", str(out)]
  assert ex.main(args) == 2
  assert "unfinished extraction of other inputs" in capsys.readouterr().err
  assert ex.main(args + ["--overwrite", "--no-progress"]) == 0
  assert ex.read_features(out)[0].shape == (3, 8)
  # --overwrite replaces a finished output too
  assert ex.main(["--encoder", "tiny", "--weights", str(weights), "--images", str(folder), "--out", str(out),
                  "--overwrite", "--no-progress"]) == 0
  np.testing.assert_allclose(ex.read_features(out)[0], expected, rtol=1e-6, atol=1e-6)


def test_bad_inputs_are_one_line_exit_2(tiny, tmp_path, capsys):
  weights, folder, _, _ = tiny
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "readme.md").write_text("no images")
  clash = tmp_path / "clash"
  _write_images(clash, SIZES[:1])
  (clash / "img00.png").write_bytes((clash / "img00.jpg").read_bytes())
  broken = tmp_path / "broken"
  _write_images(broken, SIZES[:2])
  (broken / "img01.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  existing = tmp_path / "exists.npz"
  existing.write_bytes(b"user's file")
  text = tmp_path / "texts.txt"
  text.write_text("a photo\n")
  base = ["--weights", str(weights), "--out", str(tmp_path / "o.npz")]
  cases = [
      (["--encoder", "nope", "--images", str(folder)] + base, "invalid choice: 'nope'"),
      (["--encoder", "tiny", "--texts", str(text)] + base, "encodes images only"),
      (["--encoder", "alexnet", "--texts", str(text)] + base, "encodes images only"),
      (["--encoder", "tiny", "--images", str(empty)] + base, "holds no image files"),
      (["--encoder", "tiny", "--images", str(tmp_path / "missing")] + base, "does not exist"),
      (["--encoder", "tiny", "--images", str(clash)] + base, "would share the id 'img00'"),
      (["--encoder", "tiny", "--images", str(folder), "--texts", str(text)] + base, "not allowed with"),
      (["--encoder", "tiny", "--images", str(folder), "--weights", str(tmp_path / "w.pth"), "--out",
        str(tmp_path / "o.npz")], "--weights file .*w.pth does not exist"),
      (["--encoder", "tiny", "--images", str(folder), "--weights", str(weights), "--out", str(existing)],
       "exists; pass --overwrite"),
      (["--encoder", "tiny", "--images", str(folder), "--weights", str(weights), "--out", str(folder)],
       "is a directory"),
      (["--encoder", "tiny", "--images", str(folder), "--batch-size", "0"] + base, "must be >= 1"),
      (["--encoder", "tiny", "--images", str(broken), "--no-progress"] + base, "cannot read image .*img01.png"),
      (["--encoder", "alexnet", "--images", str(folder), "--weights", str(text), "--out",
        str(tmp_path / "o.npz")], "not a PyTorch weights file"),
  ]
  import re
  for argv, pattern in cases:
    assert ex.main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(pattern, err), (argv, err)
  assert existing.read_bytes() == b"user's file"


# ---------------------------------------------------------------------------------------------
# Real encoders against torchvision


def _torchvision_rows(model, folder, names):
  import torch
  from PIL import Image
  from torchvision import transforms as tv
  pipeline = tv.Compose([tv.Resize(256), tv.CenterCrop(224), tv.ToTensor(),
                         tv.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
  batch = []
  for name in names:
    with Image.open(folder / name) as image:
      batch.append(pipeline(image.convert("RGB")))
  with torch.no_grad():
    return model(torch.stack(batch)).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["alexnet", "resnet34"])
def test_extract_matches_torchvision(tmp_path, encoder):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  torch.manual_seed(0)
  torch.set_num_threads(1)
  folder = tmp_path / "images"
  names = _write_images(folder, SIZES[:3])
  if encoder == "alexnet":
    model = torchvision.models.alexnet(weights=None).eval()
    reference = lambda x: model.classifier[:6](torch.flatten(model.avgpool(model.features(x)), 1))  # noqa: E731
  else:
    model = torchvision.models.resnet34(weights=None).eval()
    with torch.no_grad():
      for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
          m.running_mean.uniform_(-0.5, 0.5)
          m.running_var.uniform_(0.5, 2.0)
    reference = torch.nn.Sequential(*list(model.children())[:-1], torch.nn.Flatten())
  weights = tmp_path / f"{encoder}.pth"
  torch.save(model.state_dict(), weights)
  out = tmp_path / "f.npz"
  assert ex.main(["--encoder", encoder, "--weights", str(weights), "--images", str(folder), "--out", str(out),
                  "--batch-size", "2", "--no-progress"]) == 0
  features, ids, record = ex.read_features(out)
  want = _torchvision_rows(reference, folder, names)
  assert features.shape == want.shape == (3, 4096 if encoder == "alexnet" else 512)
  np.testing.assert_allclose(features, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  assert record["preprocessing"] == transforms.IMAGENET_DESCRIPTION


@pytest.mark.slow
def test_killed_run_resumes(tmp_path):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  torch.manual_seed(0)
  weights = tmp_path / "resnet34.pth"
  torch.save(torchvision.models.resnet34(weights=None).eval().state_dict(), weights)
  folder = tmp_path / "images"
  _write_images(folder, SIZES * 4)  # 20 images, one per batch
  out = tmp_path / "f.npz"
  argv = ["--encoder", "resnet34", "--weights", str(weights), "--images", str(folder), "--out", str(out),
          "--batch-size", "1"]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ex.pathlib.Path(ex.__file__).parents[1]),
                                                                 os.environ.get("PYTHONPATH")) if p))
  proc = subprocess.Popen([sys.executable, "-m", "jxhash.extract", *argv], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
  partial = tmp_path / "f.npz.partial"
  deadline = time.monotonic() + 300
  try:
    while len(list(partial.glob("rows-*.npy"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
      time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait()
  done = len(list(partial.glob("rows-*.npy")))
  assert 3 <= done < 20 and not out.exists()
  progress = json.loads((partial / "progress.json").read_text())
  assert progress["encoder"] == "resnet34" and progress["inputs"]["count"] == 20
  result = ex.extract("resnet34", weights, out, images=folder, batch_size=4, progress=False)
  assert result["finished"] and result["resumed_from"] == done
  resumed = ex.read_features(out)[0]
  fresh = tmp_path / "fresh.npz"
  ex.extract("resnet34", weights, fresh, images=folder, batch_size=20, progress=False)
  np.testing.assert_allclose(resumed, ex.read_features(fresh)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_extract_cnn_f(tmp_path):
  """CNN-F rows equal CNNF(features_only) on vgg_f.preprocess of the same files (numerics: test_cnnf)."""
  from PIL import Image
  from test_cnnf import vgg_f_layers, write_vgg_f

  from jxhash.nets.cnnf import CNNF, VGG_F_CHANNELS, VGG_F_FC_WIDTH
  from jxhash.nets.vgg_f import load_vgg_f, preprocess
  rng = np.random.default_rng(0)
  weights = tmp_path / "imagenet-vgg-f.mat"
  mean = rng.uniform(90, 140, (224, 224, 3)).astype(np.float32)
  write_vgg_f(weights, vgg_f_layers(rng, VGG_F_CHANNELS, VGG_F_FC_WIDTH), mean)
  folder = tmp_path / "images"
  names = _write_images(folder, SIZES[:3])
  out = tmp_path / "f.npz"
  assert ex.main(["--encoder", "cnn-f", "--weights", str(weights), "--images", str(folder), "--out", str(out),
                  "--batch-size", "2", "--no-progress"]) == 0
  features, ids, record = ex.read_features(out)
  params, mean_image = load_vgg_f(weights)
  pixels = []
  for name in names:
    with Image.open(folder / name) as image:
      pixels.append(preprocess(np.asarray(image.convert("RGB")), mean_image))
  want = np.asarray(CNNF(bits=1, features_only=True).apply({"params": params}, np.stack(pixels)))
  assert features.shape == (3, 4096) and record["preprocessing"] == transforms.CNN_F_DESCRIPTION
  np.testing.assert_allclose(features, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.slow
def test_extract_clip_images_and_texts(tmp_path):
  """The CLIP entry end to end on a small open_clip model: rows against open_clip's own pipeline."""
  pytest.importorskip("jxhash.nets.clip")
  torch = pytest.importorskip("torch")
  open_clip = pytest.importorskip("open_clip")
  from PIL import Image
  torch.set_num_threads(1)
  model = clip_reference.tiny_clip(width=128, image_size=224, patch_size=32, vision_layers=2, text_layers=2)
  weights = clip_reference.save(model, tmp_path / "clip.pt")
  folder = tmp_path / "images"
  names = _write_images(folder, SIZES[:3])
  captions = tmp_path / "captions.txt"
  lines = ["a photo of a cat", "", "two dogs playing in the snow, at night"]
  captions.write_text("\n".join(lines) + "\n")
  out_images, out_texts = tmp_path / "i.npz", tmp_path / "t.npz"
  for flag, source, out in (("--images", folder, out_images), ("--texts", captions, out_texts)):
    assert ex.main(["--encoder", "clip-vit-b32", "--weights", str(weights), flag, str(source), "--out", str(out),
                    "--batch-size", "2", "--no-progress"]) == 0
  preprocess = open_clip.image_transform(224, is_train=False)
  with torch.no_grad():
    pixels = []
    for name in names:
      with Image.open(folder / name) as image:
        pixels.append(preprocess(image))
    want_images = model.encode_image(torch.stack(pixels)).numpy()
    want_texts = model.encode_text(open_clip.tokenize(lines)).numpy()
  images, image_ids, _ = ex.read_features(out_images)
  texts, text_ids, record = ex.read_features(out_texts)
  assert list(text_ids) == ["1", "2", "3"] and record["inputs"]["kind"] == "texts"
  for got, want in ((images, want_images), (texts, want_texts)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
