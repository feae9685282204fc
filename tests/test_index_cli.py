"""experiments/index.py: cross-modal search with a trained checkpoint, every engine and format,
user paths of every kind, and bad input as one line on stderr with exit code 2."""

import json
import os
import pathlib
import sys

import numpy as np
import pytest

from conftest import TINY_SPLIT_FLAGS
from jxhash import data
from jxhash.index import HashIndex

from jxhash.commands import index as index_cli
from jxhash.commands import train

ROOT = pathlib.Path(__file__).resolve().parents[1]

TINY = [*TINY_SPLIT_FLAGS, "--epochs", "2", "--batch-size", "32", "--set", "image_hidden=32",
        "--set", "text_hidden=32", "--no-progress", "--eval-every", "0"]


@pytest.mark.slow
def test_build_and_search_wikipedia(wikipedia_dir, tmp_path, capsys):
  ck = tmp_path / "ck"
  assert train.main(["--method", "dcmh", "--dataset", "wikipedia", "--data-dir", str(wikipedia_dir), "--bits", "32",
                       "--epochs", "40", "--batch-size", "32", "--no-progress", "--eval-every", "0", "--name", "idx",
                       "--checkpoint-dir", str(ck), "--out", str(tmp_path / "r.json")]) == 0
  run_dir = ck / "idx"
  common = ["--dataset", "wikipedia", "--data-dir", str(wikipedia_dir)]
  assert index_cli.main(["build", "--checkpoint", str(run_dir), *common, "--split", "retrieval",
                         "--modality", "text", "--out", str(tmp_path / "text.npz")]) == 0
  capsys.readouterr()
  assert index_cli.main(["search", "--index", str(tmp_path / "text.npz"), *common, "--split", "query",
                         "--modality", "image", "--k", "10", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  ds = data.load("wikipedia", wikipedia_dir)
  classes = ds.labels.argmax(1)
  hits = [np.mean(classes[r["ids"]] == classes[r["query"]]) for r in out["results"]]
  assert len(hits) == ds.query.size and all(len(r["ids"]) == 10 for r in out["results"])
  assert set(np.concatenate([r["ids"] for r in out["results"]])) <= set(ds.retrieval.tolist())
  # the index ranks exactly as the evaluator does (stable ties): same precision@10 ...
  results = json.loads((tmp_path / "r.json").read_text())["metrics"]["i2t"]["p@n"]
  assert abs(np.mean(hits) - results["precision"][results["n"].index(10)]) < 1e-9
  # ... and clearly above chance (10 classes: about 0.11; measured 0.19 after this short run with the defaults)
  assert np.mean(hits) > 0.14, np.mean(hits)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
  """A 16-bit DCMH run on the synthetic data (128-d image, 64-d text features)."""
  root = tmp_path_factory.mktemp("ck")
  assert train.main(["--method", "dcmh", "--bits", "16", "--checkpoint-dir", str(root), "--name", "tiny", "--out",
                       str(root / "r.json"), *TINY]) == 0
  return root / "tiny"


@pytest.mark.slow
def test_engines_formats_and_paths_of_every_kind(tiny_checkpoint, tmp_path, monkeypatch, capsys):
  import faiss  # noqa: F401  (a test dependency: the "faiss" engine needs it)
  rng = np.random.default_rng(0)
  work = tmp_path / "work"
  (work / "feats").mkdir(parents=True)
  np.save(work / "feats" / "items.npy", rng.normal(size=(70, 64)).astype(np.float32))
  np.save(work / "feats" / "queries.npy", rng.normal(size=(6, 128)).astype(np.float32))
  np.save(work / "feats" / "ids.npy", np.arange(70, dtype=np.float64)[:, None] * 10 + 3)  # MATLAB-style column
  os.symlink(work / "feats", tmp_path / "linked")
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.chdir(work)
  ck = os.path.relpath(tiny_checkpoint, work)
  # relative, ./, ~ and a symlinked folder, each resolved once
  assert index_cli.main(["build", "--checkpoint", ck, "--features", "~/linked/items.npy", "--ids",
                         "./feats/ids.npy", "--modality", "text", "--out", "out/db.npz"]) == 0
  index = HashIndex.load(work / "out" / "db.npz")
  assert index.metadata["checkpoint"] == str(tiny_checkpoint.resolve())
  assert index.metadata["source"] == str(work / "feats" / "items.npy")
  np.testing.assert_array_equal(index.ids, np.arange(70) * 10 + 3)
  capsys.readouterr()
  query = ["--features", "feats/queries.npy", "--modality", "image", "--k", "9", "--json"]
  answers = {}
  for engine in ("flat", "mih", "faiss"):
    assert index_cli.main(["search", "--index", "out/db.npz", "--engine", engine, *query]) == 0
    answers[engine] = json.loads(capsys.readouterr().out)["results"]
  assert answers["flat"] == answers["mih"] == answers["faiss"]
  # the same codes as a FAISS file, and back
  assert index_cli.main(["convert", "--index", "out/db.npz", "--out", "~/db.faissindex", "--format", "faiss"]) == 0
  assert index_cli.main(["search", "--index", "~/db.faissindex", *query]) == 2
  assert "records no checkpoint; pass --checkpoint" in capsys.readouterr().err
  assert index_cli.main(["search", "--index", "~/db.faissindex", "--checkpoint", ck, *query]) == 0
  assert json.loads(capsys.readouterr().out)["results"] == answers["flat"]
  assert index_cli.main(["build", "--checkpoint", ck, "--features", "feats/items.npy", "--modality", "text",
                         "--format", "faiss", "--out", "direct.faissindex"]) == 0
  direct = HashIndex.load(work / "direct.faissindex")
  np.testing.assert_array_equal(direct.packed_codes, index.packed_codes)
  np.testing.assert_array_equal(direct.ids, np.arange(70))


def error_of(argv, capsys):
  """Runs the CLI expecting a user error: exit 2 and one line on stderr; returns that line."""
  assert index_cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1, err
  return err


@pytest.fixture
def files(tmp_path):
  rng = np.random.default_rng(1)
  paths = {"ok": tmp_path / "ok.npy", "cube": tmp_path / "cube.npy", "flat": tmp_path / "flat.npy",
           "half": tmp_path / "half.npy", "nan": tmp_path / "nan.npy", "short": tmp_path / "short.npy",
           "dup": tmp_path / "dup.npy", "text": tmp_path / "notes.txt"}
  np.save(paths["ok"], rng.normal(size=(5, 64)).astype(np.float32))
  np.save(paths["cube"], np.zeros((4, 3, 2), np.float32))
  np.save(paths["flat"], np.zeros(5, np.float32))
  np.save(paths["half"], np.array([0, 1.5, 2, 3, 4]))
  np.save(paths["nan"], np.array([0, 1, np.nan, 3, 4]))
  np.save(paths["short"], np.arange(3))
  np.save(paths["dup"], np.array([0, 2, 1, 2, 4]))
  paths["text"].write_text("not an index")
  return paths


def test_bad_input_is_one_line_and_exit_2(files, tmp_path, capsys):
  build = ["build", "--checkpoint", str(tmp_path / "no-such-checkpoint"), "--modality", "text"]
  ok = ["--features", str(files["ok"])]
  out = ["--out", str(tmp_path / "db.npz")]
  cases = [
      (build + ok + out + ["--batch", "0"], "argument --batch: must be >= 1, got 0"),
      (build + ok + ["--out", str(tmp_path)], f"--out {tmp_path} is a directory; give a file name"),
      (build + ok + ["--out", str(files["text"] / "db.npz")], "lies under .*notes.txt, which is a file"),
      (build + ["--features", str(files["cube"])] + out, r"cube.npy holds an array of shape \(4, 3, 2\); expected \(N, D\)"),
      (build + ["--features", str(files["flat"])] + out, r"flat.npy holds an array of shape \(5,\); expected \(N, D\)"),
      (build + ok + ["--ids", str(files["half"])] + out, "id 1.5 at row 1 is not a whole number"),
      (build + ok + ["--ids", str(files["nan"])] + out, "id nan at row 2 is not a whole number"),
      (build + ok + ["--ids", str(files["short"])] + out, "holds 3 ids for 5 items"),
      (build + ok + ["--ids", str(files["dup"])] + out, "id 2 appears more than once"),
      (build + ["--ids", str(files["short"])] + out, "--ids goes with --features"),
      (build + ["--features", str(tmp_path / "missing.npy")] + out, "--features file .*missing.npy does not exist"),
      (build + ok + out, "checkpoint path .*no-such-checkpoint does not exist"),  # only after the checks above
      (["search", "--index", str(files["text"]), "--modality", "image", "--k", "0"], "argument --k: must be >= 1, got 0"),
      (["search", "--index", str(files["text"]), "--modality", "image", "--limit", "-2"], "argument --limit: must be >= 1, got -2"),
      (["search", "--index", str(tmp_path / "none.npz"), "--modality", "image"], "no HashIndex file at .*none.npz"),
      (["search", "--index", str(files["text"]), "--modality", "image"], "notes.txt is not a HashIndex file"),
  ]
  import re
  for argv, message in cases:
    line = error_of(argv, capsys)
    assert re.search(message, line), (argv, line)
  assert not (tmp_path / "db.npz").exists()
  odd = HashIndex(12)
  odd.add(np.ones((3, 12)))
  odd.save(tmp_path / "odd.npz")
  line = error_of(["convert", "--index", str(tmp_path / "odd.npz"), "--out", str(tmp_path / "odd.faissindex"),
                   "--format", "faiss"], capsys)
  assert "multiple of 8 bits; this index has 12" in line
  assert not (tmp_path / "odd.faissindex").exists()


def test_search_refuses_a_checkpoint_of_another_width(tmp_path, capsys):
  HashIndex(16, metadata={"checkpoint": str(tmp_path / "missing")}).save(tmp_path / "i.npz")
  np.save(tmp_path / "q.npy", np.zeros((2, 128), np.float32))
  line = error_of(["search", "--index", str(tmp_path / "i.npz"), "--features", str(tmp_path / "q.npy"),
                   "--modality", "image"], capsys)
  assert "checkpoint path" in line and "does not exist" in line
