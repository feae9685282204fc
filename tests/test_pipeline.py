"""End to end, per protocol: prepare -> extract -> train -> evaluate on the generated raw trees.

Each protocol of configs/<dataset>-<family>/ runs the way docs/reproduce.md tells a user to: the
raw tree (tests/prepare_trees.py, in the official layout; as the downloaded .zip archives for
one protocol of each zipped dataset, extracted for the others) is prepared with `jxhash prepare`,
its images go through a ported encoder on random weights with `jxhash extract --prepared`
(torchvision's AlexNet for the DCMH lineage, a 2-layer open_clip CLIP for the CLIP lineage), and
the protocol's dcmh config trains on the features at the smoke preset. The extracted rows are
checked against torch on the same images (independent of the Flax port and of the prepared
order), the results file against the protocol's split sizes and metrics.

The guide test runs the bash blocks of docs/reproduce.md that concern MIRFlickr-25K, as written,
on the generated tree: $RAW and $WEIGHTS point at it and at random weights (CNN-F and a small
CLIP), METHOD=dcmh and BITS=16 pick one run per protocol, the `jxhash train` lines get
`--preset smoke` appended (`test_readme.with_smoke`), and the prepare lines get split rules
that fit the 44 items.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest

import clip_reference

from jxhash import extract as ex
from jxhash.commands import train
from jxhash.data.prepare import cli as prepare_cli
from prepare_trees import (COCO_KEPT, IAPR_KEPT, MIR_LABELLED_TAGGED, NUS_LABELLED, NUS_LABELLED_TAGGED, make_coco,
                           make_iapr, make_mirflickr, make_nuswide)
from test_readme import blocks, commands, with_smoke

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Split rules scaled to trees of 32-60 items: 5 queries, 12 drawn training items of which 3 are val.
SMALL = ["--rule", "num_query=5", "--rule", "num_train=12", "--rule", "num_val=3"]
SPLITS = {"query": 5, "train": 9, "val": 3}

# name -> (dataset, protocol, raw tree zipped as downloaded?, items the tree keeps: worked out by hand in
# prepare_trees)
PROTOCOLS = {
    "mirflickr25k-dcmh": ("mirflickr25k", "dcmh", True, MIR_LABELLED_TAGGED),
    "mirflickr25k-clip": ("mirflickr25k", "clip", False, MIR_LABELLED_TAGGED),
    "nuswide-dcmh": ("nuswide", "dcmh", True, NUS_LABELLED),
    "nuswide-clip": ("nuswide", "clip", False, NUS_LABELLED_TAGGED),
    "coco-clip": ("coco", "clip", True, COCO_KEPT),
    "iapr-dcmh": ("iapr", "dcmh", False, IAPR_KEPT),
}
MAKERS = {"mirflickr25k": make_mirflickr, "nuswide": make_nuswide, "coco": make_coco, "iapr": make_iapr}


def make_tree(dataset: str, root: pathlib.Path, zipped: bool) -> pathlib.Path:
  return MAKERS[dataset](root, zipped=True) if zipped else MAKERS[dataset](root)


# ---------------------------------------------------------------------------------------------
# Encoders on random weights, and their torch references


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
  """{"alexnet": (weights file, torch reference), "clip-vit-b32": (...)}: random weights."""
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  open_clip = pytest.importorskip("open_clip")
  folder = tmp_path_factory.mktemp("weights")
  torch.manual_seed(0)
  alexnet = torchvision.models.alexnet(weights=None).eval()
  torch.save(alexnet.state_dict(), folder / "alexnet-random.pth")
  # drawn after AlexNet's weights, from the same seeded RNG
  clip = clip_reference.tiny_clip(width=128, image_size=224, patch_size=32, vision_layers=2, text_layers=2, seed=None)
  clip_reference.save(clip, folder / "ViT-B-32.pt")
  tv = torchvision.transforms
  imagenet = tv.Compose([tv.Resize(256), tv.CenterCrop(224), tv.ToTensor(),
                         tv.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

  def alexnet_fc7(images):
    x = torch.stack([imagenet(i) for i in images])
    return alexnet.classifier[:6](torch.flatten(alexnet.avgpool(alexnet.features(x)), 1))

  clip_preprocess = open_clip.image_transform(224, is_train=False)

  def clip_image(images):
    return clip.encode_image(torch.stack([clip_preprocess(i) for i in images]))

  def reference(fn):
    def run(images):
      with torch.no_grad():
        return fn(images).numpy()
    return run

  return {"alexnet": (folder / "alexnet-random.pth", reference(alexnet_fc7)),
          "clip-vit-b32": (folder / "ViT-B-32.pt", reference(clip_image)),
          "folder": folder}


def raw_image(extracted: pathlib.Path, rel: str):
  """The image at `rel` of an extracted twin of the raw tree, read with PIL alone."""
  from PIL import Image
  with Image.open(extracted / rel) as image:
    return image.convert("RGB")


# ---------------------------------------------------------------------------------------------
# One protocol end to end


def results_of(path: pathlib.Path) -> dict:
  return json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_prepare_extract_train_evaluate(name, encoders, tmp_path):
  dataset, protocol, zipped, items = PROTOCOLS[name]
  family = name.rsplit("-", 1)[1]
  raw = make_tree(dataset, tmp_path / "raw", zipped)
  prepared = tmp_path / name
  assert prepare_cli.main([dataset, "--raw", str(raw), "--out", str(prepared), "--protocol", protocol, *SMALL,
                           "--no-progress"]) == 0
  manifest = json.loads((prepared / "manifest.json").read_text())
  assert manifest["counts"]["items"] == items

  encoder = "alexnet" if family == "dcmh" else "clip-vit-b32"
  weights, reference = encoders[encoder]
  features_file = tmp_path / "features.npz"
  assert ex.main(["--encoder", encoder, "--weights", str(weights), "--prepared", str(prepared), "--raw", str(raw),
                  "--out", str(features_file), "--batch-size", "16", "--no-progress"]) == 0
  features, ids, record = ex.read_features(features_file)
  prepared_ids = (prepared / "ids.txt").read_text().splitlines()
  assert list(ids) == prepared_ids and features.shape == (items, 4096 if family == "dcmh" else 32)
  assert record["inputs"]["count"] == items and record["encoder"] == encoder
  # rows against torch on the images images.txt names, read from an extracted twin of the tree
  twin = make_tree(dataset, tmp_path / "twin", zipped=False)
  images = (prepared / "images.txt").read_text().splitlines()
  rows = [0, items // 2, items - 1]
  want = reference([raw_image(twin, images[k]) for k in rows])
  np.testing.assert_allclose(features[rows], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())

  config = ROOT / "configs" / name / "dcmh.py"
  workdir = tmp_path / "work"
  out = workdir / "results.json"
  assert train.main(["--config", str(config), "--data-dir", str(prepared), "--data-option",
                     f"image_features={features_file}", "--preset", "smoke", "--bits", "16", "--seeds", "1",
                     "--batch-size", "8", "--workdir", str(workdir), "--out", str(out), "--no-progress",
                     "--no-checkpoint"]) == 0
  result = results_of(out)
  assert result["dataset"] == f"{dataset}-{protocol}" and result["bits"] == 16
  assert result["split_sizes"] == {**SPLITS, "retrieval": items - SPLITS["query"]}
  assert result["split_sizes"] == manifest["counts"]["splits"]
  assert result["dims"]["image_shape"] == [features.shape[1]]
  for direction in ("i2t", "t2i"):
    value = result["map"][direction]
    assert math.isfinite(value) and 0.0 <= value <= 1.0
    cut = result["metrics"][direction]["map@k"]
    assert ("5000" in cut) == (family == "clip")
    for k in cut.values():
      assert math.isfinite(k) and 0.0 <= k <= 1.0


# ---------------------------------------------------------------------------------------------
# extract --prepared: its input checks (one line, exit 2, before any weights are read)


def _prepared_mirflickr(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
  raw = make_mirflickr(tmp_path / "raw", n=30)
  prepared = tmp_path / "prepared"
  assert prepare_cli.main(["mirflickr25k", "--raw", str(raw), "--out", str(prepared), *SMALL, "--no-progress"]) == 0
  return raw, prepared


def _one_line_error(capsys, argv) -> str:
  assert ex.main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1, err
  return err


def test_extract_prepared_input_errors(tmp_path, capsys):
  raw, prepared = _prepared_mirflickr(tmp_path)
  base = ["--encoder", "alexnet", "--weights", str(tmp_path / "absent.pth"), "--out", str(tmp_path / "f.npz")]
  assert "--raw FOLDER go together" in _one_line_error(capsys, [*base, "--prepared", str(prepared)])
  assert "go together" in _one_line_error(capsys, [*base, "--images", str(raw / "mirflickr"), "--raw", str(raw)])
  assert "no ids.txt" in _one_line_error(capsys, [*base, "--prepared", str(raw), "--raw", str(raw)])
  (raw / "mirflickr" / "im2.jpg").unlink()
  err = _one_line_error(capsys, [*base, "--prepared", str(prepared), "--raw", str(raw)])
  assert "1 of the" in err and "mirflickr/im2.jpg" in err
  # every image there: the next check is the weights file
  raw2 = make_mirflickr(tmp_path / "raw2", n=30, zipped=True)
  err = _one_line_error(capsys, [*base, "--prepared", str(prepared), "--raw", str(raw2)])
  assert "absent.pth" in err
  assert not (tmp_path / "f.npz").exists() and not (tmp_path / "f.npz.partial").exists()


def test_extract_prepared_refuses_images_inside_a_tar(tmp_path, capsys):
  raw = make_iapr(tmp_path / "raw", tar=True)
  prepared = tmp_path / "prepared"
  assert prepare_cli.main(["iapr", "--raw", str(raw), "--out", str(prepared), *SMALL, "--no-progress"]) == 0
  with tarfile.open(raw / "iaprtc12.tgz") as archive:
    assert any(m.name.endswith(".jpg") for m in archive)
  err = _one_line_error(capsys, ["--encoder", "alexnet", "--weights", str(tmp_path / "w.pth"), "--prepared",
                                 str(prepared), "--raw", str(raw), "--out", str(tmp_path / "f.npz")])
  assert "iaprtc12.tgz" in err and "extract that archive" in err


def test_extract_prepared_rows_follow_the_prepared_order(tmp_path, monkeypatch):
  """A stand-in encoder (mean colour of each image) shows row k is images.txt line k, read from the zip."""
  raw = make_mirflickr(tmp_path / "raw", n=30, zipped=True)
  prepared = tmp_path / "prepared"
  assert prepare_cli.main(["mirflickr25k", "--raw", str(raw), "--out", str(prepared), *SMALL, "--no-progress"]) == 0
  twin = make_mirflickr(tmp_path / "twin", n=30)

  def load(path):
    return ex.Model(lambda image: np.asarray(image.resize((4, 4)), np.float32),
                    lambda x: x.mean(axis=(1, 2)), "mean colour")

  monkeypatch.setitem(ex.ENCODERS, "alexnet", ex.dataclasses.replace(ex.ENCODERS["alexnet"], load=load))
  weights = tmp_path / "w.bin"
  weights.write_bytes(b"stand-in")
  out = tmp_path / "f.npz"
  result = ex.extract("alexnet", weights, out, prepared=prepared, raw=raw, batch_size=3, progress=False)
  assert result["finished"]
  features, ids, record = ex.read_features(out)
  assert list(ids) == (prepared / "ids.txt").read_text().splitlines()
  assert record["ids"] == "ids.txt of the prepared folder"
  images = (prepared / "images.txt").read_text().splitlines()
  want = np.stack([np.asarray(raw_image(twin, rel).resize((4, 4)), np.float32).mean(axis=(0, 1)) for rel in images])
  np.testing.assert_allclose(features, want, rtol=1e-6, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# docs/reproduce.md, run as written on the generated MIRFlickr-25K tree

GUIDE = ROOT / "docs" / "reproduce.md"
GUIDE_BLOCK = re.compile(r"(<!-- reproduce-test: skip \(([^)]*)\) -->\n)?```bash\n(.*?)```", re.S)
OTHER_DATASET = re.compile(r"\b(nuswide|coco|iapr)\b")
# the generated tree keeps 44 items: the split rules shrink to fit it, with a training set of 33
# items (the smoke preset's batches hold 32)
GUIDE_RULES = " --rule num_query=5 --rule num_train=36 --rule num_val=3 --no-progress"
JXHASH = re.compile(r"(?:^|[;&|]\s*|\bdo\s+)jxhash (\w+)")


def guide_lines() -> list[str]:
  """The guide's bash commands (continuations joined) that concern MIRFlickr-25K or no dataset."""
  lines = []
  for m in GUIDE_BLOCK.finditer(GUIDE.read_text()):
    if m.group(1) is None:
      lines += [line for line in commands(m.group(3)) if not OTHER_DATASET.search(line)]
  return lines


def test_the_guide_uses_the_jxhash_commands_and_paths_from_the_environment():
  text = GUIDE.read_text()
  every = [line for m in GUIDE_BLOCK.finditer(text) if m.group(1) is None for line in commands(m.group(3))]
  assert "experiments/" not in text and "python " not in "\n".join(every)
  used = {name for line in every for name in JXHASH.findall(line)}
  assert used == {"prepare", "extract", "train", "report"}
  assert all("--raw \"$RAW/" in line for line in every if "--raw" in line)
  assert all("--weights \"$WEIGHTS/" in line for line in every if "--weights" in line)
  # every protocol folder is prepared, extracted and run
  for name in PROTOCOLS:
    assert sum(f"data/{name}" in line for line in every) == 3, name
  mine = guide_lines()
  assert [JXHASH.findall(line)[0] for line in mine] == ["prepare", "prepare", "extract", "extract", "train", "train",
                                                        "report"]


@pytest.mark.slow
def test_the_reproduce_guide_runs_on_the_generated_mirflickr_tree(encoders, tmp_path):
  from test_cnnf import vgg_f_layers, write_vgg_f

  from jxhash.nets.cnnf import VGG_F_CHANNELS, VGG_F_FC_WIDTH
  weights = tmp_path / "weights"
  weights.mkdir()
  (weights / "ViT-B-32.pt").symlink_to(encoders["clip-vit-b32"][0])
  rng = np.random.default_rng(0)
  write_vgg_f(weights / "imagenet-vgg-f.mat", vgg_f_layers(rng, VGG_F_CHANNELS, VGG_F_FC_WIDTH),
              rng.uniform(90, 140, (224, 224, 3)).astype(np.float32))
  raw = make_mirflickr(tmp_path / "raw" / "mirflickr25k", zipped=True)
  checkout = tmp_path / "checkout"  # where the guide's commands run: configs/ and nothing else
  checkout.mkdir()
  (checkout / "configs").symlink_to(ROOT / "configs")
  env = dict(os.environ, RAW=str(raw.parent), WEIGHTS=str(weights), METHOD="dcmh", BITS="16", JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
  import importlib.util
  has_report = importlib.util.find_spec("jxhash.commands.report") is not None
  ran = []
  for line in guide_lines():
    if line.startswith("jxhash prepare"):
      line += GUIDE_RULES
    if line.startswith("jxhash report") and not has_report:
      continue
    line = with_smoke(line)
    proc = subprocess.run(["bash", "-c", "set -euo pipefail; " + line], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{line}\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    ran.append(line)
  for name, dim in (("mirflickr25k-dcmh", 4096), ("mirflickr25k-clip", 32)):
    folder = checkout / "data" / name
    features, ids, record = ex.read_features(folder / "image_features.npz")
    assert list(ids) == (folder / "ids.txt").read_text().splitlines() and features.shape == (MIR_LABELLED_TAGGED, dim)
    assert np.isfinite(features).all() and features.std() > 0
  results = {results_of(p)["dataset"]: results_of(p) for p in sorted((checkout / "results").glob("*.json"))}
  assert sorted(results) == ["mirflickr25k-clip", "mirflickr25k-dcmh"]
  for name, result in results.items():
    assert result["method"] == "dcmh" and result["bits"] == 16 and result["num_seeds"] == 5
    assert result["split_sizes"] == {"query": 5, "retrieval": MIR_LABELLED_TAGGED - 5, "train": 33, "val": 3}
    for direction in ("i2t", "t2i"):
      assert 0.0 <= result["map"][direction] <= 1.0
      assert ("5000" in result["metrics"][direction]["map@k"]) == name.endswith("clip")
  if not has_report:
    pytest.skip("every step ran but the report: `jxhash report` is not in this checkout yet")
  table = (checkout / "table.md").read_text()
  assert "mirflickr25k-dcmh" in table and "mirflickr25k-clip" in table
