"""`prepare` on MIRFlickr-25K trees in the official layout: counts, determinism, resuming, bad inputs,
the `prepared` loader, and the DCMH release inverted into a raw tree (real data, slow)."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from jxhash.data.prepare import cli, common
from prepare_trees import (MIR_CONCEPTS, MIR_LABELLED, MIR_LABELLED_TAGGED, MIR_N, MIR_VOCAB, make_mirflickr,
                           mir_labels, mir_tags)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = ["--rule", "num_query=10", "--rule", "num_train=20", "--rule", "num_val=4", "--no-progress"]


def tree_digest(folder: pathlib.Path) -> dict:
  return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob("*")) if p.is_file()}


def prepare(raw, out, *extra, dataset="mirflickr25k") -> int:
  return cli.main([dataset, "--raw", str(raw), "--out", str(out), *SMALL, *extra])


@pytest.fixture
def mir_raw(tmp_path):
  return make_mirflickr(tmp_path / "raw")


def test_dcmh_protocol_counts_labels_and_tags_by_hand(mir_raw, tmp_path):
  out = tmp_path / "out"
  assert prepare(mir_raw, out) == 0
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["counts"]["items"] == MIR_LABELLED_TAGGED
  assert manifest["counts"]["dropped"] == {"no_label": 6, "no_common_tag": 10}
  ids = (out / "ids.txt").read_text().splitlines()
  numbers = [int(i[2:]) for i in ids]
  assert numbers == sorted(numbers) and len(numbers) == MIR_LABELLED_TAGGED
  labels = np.load(out / "labels.npy")
  assert (out / "classes.txt").read_text().splitlines() == sorted(MIR_CONCEPTS)
  with np.load(out / "text_bow.npz") as f:
    indptr, indices, shape = f["indptr"], f["indices"], f["shape"]
  assert shape.tolist() == [MIR_LABELLED_TAGGED, len(MIR_VOCAB)]
  for row, i in enumerate(numbers):  # every row against the generator's own rules
    assert np.flatnonzero(labels[row]).tolist() == mir_labels(i)
    expected = sorted(MIR_VOCAB.index(t) for t in mir_tags(i) if t in MIR_VOCAB)
    assert indices[indptr[row]:indptr[row + 1]].tolist() == expected
  captions = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
  assert captions[0] == [" ".join(t for t in mir_tags(numbers[0]) if t in MIR_VOCAB)]
  images = (out / "images.txt").read_text().splitlines()
  assert images[0] == f"mirflickr/im{numbers[0]}.jpg" and (mir_raw / images[0]).is_file()
  assert manifest["flags"]["not_jpeg"]["kept_ids"] == ["im3"]
  with np.load(out / "splits.npz") as f:
    parts = {k: f[k] for k in f.files}
  assert [parts[k].size for k in ("query", "retrieval", "train", "val")] == [10, 34, 16, 4]
  assert not np.intersect1d(parts["query"], parts["retrieval"]).size
  assert np.union1d(parts["query"], parts["retrieval"]).tolist() == list(range(MIR_LABELLED_TAGGED))
  assert set(parts["train"]) | set(parts["val"]) <= set(parts["retrieval"])
  assert not np.intersect1d(parts["val"], parts["train"]).size and not np.intersect1d(parts["val"], parts["query"]).size
  assert manifest["label_counts"] == {c: int(labels[:, k].sum()) for k, c in enumerate(sorted(MIR_CONCEPTS))}
  assert set(manifest["raw_files"]) >= {"mirflickr/doc/common_tags.txt", "animals.txt", "mirflickr/meta/tags/tags1.txt"}
  assert "baby_r1.txt" not in manifest["raw_files"]
  assert manifest["raw_files"]["animals.txt"]["sha256"] == hashlib.sha256((mir_raw / "animals.txt").read_bytes()).hexdigest()


def test_clip_dsph_protocol_keeps_every_labelled_image_with_all_tags(mir_raw, tmp_path):
  out = tmp_path / "out"
  assert prepare(mir_raw, out, "--protocol", "clip-dsph") == 0
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["counts"]["items"] == MIR_LABELLED
  assert manifest["rules"]["caption"] == "all-tags" and manifest["rules"]["num_query"] == 10
  ids = (out / "ids.txt").read_text().splitlines()
  captions = [json.loads(line)[0] for line in (out / "captions.jsonl").read_text().splitlines()]
  for i, caption in zip(ids, captions):
    assert caption == " ".join(mir_tags(int(i[2:])))
  assert "im15" in ids and captions[ids.index("im15")] == ""  # an empty tag file: kept, empty caption


def test_zipped_and_extracted_downloads_give_the_same_outputs(tmp_path):
  extracted = make_mirflickr(tmp_path / "a")
  zipped = make_mirflickr(tmp_path / "b", zipped=True)
  assert sorted(p.name for p in zipped.iterdir()) == ["mirflickr25k.zip", "mirflickr25k_annotations_v080.zip"]
  assert prepare(extracted, tmp_path / "out-a") == 0 and prepare(zipped, tmp_path / "out-b") == 0
  a, b = tree_digest(tmp_path / "out-a"), tree_digest(tmp_path / "out-b")
  assert {k: v for k, v in a.items() if k != "manifest.json"} == {k: v for k, v in b.items() if k != "manifest.json"}
  raw_b = json.loads((tmp_path / "out-b" / "manifest.json").read_text())["raw_files"]
  assert set(raw_b) == {"mirflickr25k.zip", "mirflickr25k_annotations_v080.zip"}


def test_a_second_run_is_byte_identical_and_a_finished_output_is_kept(mir_raw, tmp_path, capsys):
  assert prepare(mir_raw, tmp_path / "one") == 0
  assert prepare(mir_raw, tmp_path / "two") == 0
  assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two")
  before = tree_digest(tmp_path / "one")
  capsys.readouterr()
  assert prepare(mir_raw, tmp_path / "one") == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "already prepared" in err and "--overwrite" in err
  assert tree_digest(tmp_path / "one") == before
  assert prepare(mir_raw, tmp_path / "one", "--overwrite") == 0
  assert tree_digest(tmp_path / "one") == before


@pytest.mark.parametrize("step", ["scan", "write", "split"])
def test_a_run_killed_after_a_step_resumes_to_the_clean_result(mir_raw, tmp_path, monkeypatch, step):
  assert prepare(mir_raw, tmp_path / "clean") == 0

  class Killed(Exception):
    pass

  def crash(name):
    if name == step:
      raise Killed(name)

  monkeypatch.setattr(common, "after_step", crash)
  with pytest.raises(Killed):
    prepare(mir_raw, tmp_path / "out")
  partial = tmp_path / "out.partial"
  assert not (tmp_path / "out").exists() and step in json.loads((partial / "state.json").read_text())["done"]
  ran = []
  monkeypatch.setattr(common, "after_step", ran.append)
  assert prepare(mir_raw, tmp_path / "out") == 0
  assert step not in ran and "manifest" in ran  # the finished steps were not redone
  assert not partial.exists()
  assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "clean")


def test_a_partial_folder_from_other_rules_is_started_afresh(mir_raw, tmp_path, monkeypatch):
  def crash(name):
    raise RuntimeError(name)

  monkeypatch.setattr(common, "after_step", crash)
  with pytest.raises(RuntimeError):
    prepare(mir_raw, tmp_path / "out", "--protocol", "clip-dsph")
  monkeypatch.setattr(common, "after_step", lambda name: None)
  assert prepare(mir_raw, tmp_path / "out") == 0
  assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["items"] == MIR_LABELLED_TAGGED


def _one_line_error(capsys, code, *needles):
  err = capsys.readouterr().err
  assert code == 2
  assert err.startswith("error: ") and err.count("\n") == 1, err
  for needle in needles:
    assert needle in err, err


def test_bad_raw_inputs_are_one_line_naming_the_file(tmp_path, capsys):
  raw = make_mirflickr(tmp_path / "missing")
  (raw / "dog.txt").unlink()
  _one_line_error(capsys, prepare(raw, tmp_path / "o1"), "dog.txt")
  raw = make_mirflickr(tmp_path / "malformed")
  (raw / "sky.txt").write_bytes(b"1\r\n2x\r\n")
  _one_line_error(capsys, prepare(raw, tmp_path / "o2"), "sky.txt:2", "'2x'")
  raw = make_mirflickr(tmp_path / "range")
  (raw / "sky.txt").write_bytes(b"1\r\n61\r\n")
  _one_line_error(capsys, prepare(raw, tmp_path / "o3"), "sky.txt:2", "1..60")
  raw = make_mirflickr(tmp_path / "corrupt", zipped=True)
  (raw / "mirflickr25k.zip").write_bytes(b"PK\x03\x04 not a zip at all")
  _one_line_error(capsys, prepare(raw, tmp_path / "o4"), "mirflickr25k.zip", "zip")
  raw = make_mirflickr(tmp_path / "damaged", zipped=True)
  data = bytearray((raw / "mirflickr25k_annotations_v080.zip").read_bytes())
  with zipfile.ZipFile(raw / "mirflickr25k_annotations_v080.zip") as z:
    info = z.getinfo("sky.txt")
  data[info.header_offset + 30 + len("sky.txt") + 2] ^= 0xFF  # flip a byte of the compressed data
  (raw / "mirflickr25k_annotations_v080.zip").write_bytes(bytes(data))
  _one_line_error(capsys, prepare(raw, tmp_path / "o5"), "mirflickr25k_annotations_v080.zip")
  raw = make_mirflickr(tmp_path / "noimage")
  (raw / "mirflickr" / "im5.jpg").unlink()
  _one_line_error(capsys, prepare(raw, tmp_path / "o6"), "mirflickr/im5.jpg", "missing_images=drop")
  assert prepare(raw, tmp_path / "o7", "--rule", "missing_images=drop") == 0
  assert json.loads((tmp_path / "o7" / "manifest.json").read_text())["counts"]["dropped"]["image_missing"] == 1
  _one_line_error(capsys, prepare(tmp_path / "nowhere", tmp_path / "o8"), "--raw")
  _one_line_error(capsys, prepare(raw, tmp_path / "o9", "--rule", "keep=all"), "keep")
  _one_line_error(capsys, prepare(raw, tmp_path / "o10", "--protocol", "nope"), "nope")
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "mine.txt").write_text("x")
  _one_line_error(capsys, prepare(raw, tmp_path / "full"), "not a prepared folder")


@pytest.mark.slow
def test_the_command_line_wrapper_exits_2_with_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  done = subprocess.run([sys.executable, str(ROOT / "experiments" / "prepare.py"), "mirflickr25k", "--raw",
                         str(tmp_path / "absent"), "--out", str(tmp_path / "o")], capture_output=True, text=True,
                        env=env)
  assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--raw" in done.stderr
  raw = make_mirflickr(tmp_path / "raw", zipped=True)
  done = subprocess.run([sys.executable, "-m", "jxhash.data.prepare", "mirflickr25k", "--raw", str(raw), "--out",
                         str(tmp_path / "o"), *SMALL], capture_output=True, text=True, env=env)
  assert done.returncode == 0, done.stderr
  assert f"{MIR_LABELLED_TAGGED} items" in done.stdout


def test_a_symlinked_out_is_refused(mir_raw, tmp_path, capsys):
  (tmp_path / "elsewhere").mkdir()
  (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
  _one_line_error(capsys, prepare(mir_raw, tmp_path / "link"), "symbolic link")
  assert not any((tmp_path / "elsewhere").iterdir())
