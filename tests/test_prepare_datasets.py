"""`prepare` on NUS-WIDE, MS-COCO and IAPR TC-12 trees in the official layouts (hand-computed counts,
quirks, zipped = extracted), and the `prepared` loader on a prepared folder."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from jxhash import data
from jxhash.data.prepare import cli
from jxhash.errors import DataError
from prepare_trees import (SMALL, digest, run, COCO_CATEGORIES, COCO_KEPT, COCO_TRAIN, COCO_VAL, IAPR_KEPT, IAPR_LABELS, NUS_LABELLED,
                           NUS_LABELLED_TAGGED, NUS_TAGS, NUS_TC21, coco_captions, coco_categories, iapr_labels,
                           make_coco, make_iapr, make_mirflickr, make_nuswide, nus_1k, nus_labels)



def bow_rows(out: pathlib.Path) -> list[list[int]]:
  with np.load(out / "text_bow.npz") as f:
    indptr, indices = f["indptr"], f["indices"]
  return [indices[indptr[k]:indptr[k + 1]].tolist() for k in range(indptr.size - 1)]


def test_nuswide_dcmh_and_clip_protocols(tmp_path):
  raw = make_nuswide(tmp_path / "raw")
  manifest = run("nuswide", raw, tmp_path / "dcmh")
  assert manifest["counts"]["items"] == NUS_LABELLED and manifest["counts"]["labels"] == 21
  assert (tmp_path / "dcmh" / "classes.txt").read_text().splitlines() == sorted(NUS_TC21)
  ids = (tmp_path / "dcmh" / "ids.txt").read_text().splitlines()
  items = [int(i.split("_")[0]) for i in ids]
  labels = np.load(tmp_path / "dcmh" / "labels.npy")
  for row, i in enumerate(items):
    assert [sorted(NUS_TC21)[k] for k in np.flatnonzero(labels[row])] == sorted(nus_labels(i))
  assert bow_rows(tmp_path / "dcmh") == [nus_1k(i) for i in items]
  assert (tmp_path / "dcmh" / "vocab.txt").read_text().splitlines() == list(NUS_TAGS)
  images = (tmp_path / "dcmh" / "images.txt").read_text().splitlines()
  assert images[0] == "Flickr/actor/0000_2000000000.jpg" and all((raw / p).is_file() for p in images)
  assert manifest["flags"]["not_jpeg"]["kept_ids"] == ["0012_2000000012"]
  assert manifest["notes"]["duplicated_flickr_ids"] == 1
  assert not [p for p in manifest["raw_files"] if "TrainTestLabels" in p]  # the bad -1130179 line is never read
  captions = [json.loads(line)[0] for line in (tmp_path / "dcmh" / "captions.jsonl").read_text().splitlines()]
  assert captions[items.index(13)] == " ".join(NUS_TAGS[k] for k in nus_1k(13))
  clip = run("nuswide", raw, tmp_path / "clip", "--protocol", "clip")
  assert clip["counts"]["items"] == NUS_LABELLED_TAGGED
  assert clip["counts"]["dropped"] == {"no_label": 20, "no_1k_tag": 4}


def test_nuswide_zipped_equals_extracted_and_bad_lines_are_one_line(tmp_path, capsys):
  run("nuswide", make_nuswide(tmp_path / "a"), tmp_path / "out-a")
  run("nuswide", make_nuswide(tmp_path / "b", zipped=True), tmp_path / "out-b")
  a, b = digest(tmp_path / "out-a"), digest(tmp_path / "out-b")
  assert {k: v for k, v in a.items() if k != "manifest.json"} == {k: v for k, v in b.items() if k != "manifest.json"}
  raw = make_nuswide(tmp_path / "bad")
  path = raw / "Groundtruth" / "AllLabels" / "Labels_sky.txt"
  path.write_text(path.read_text().replace("0\n", "2\n", 1))
  assert cli.main(["nuswide", "--raw", str(raw), "--out", str(tmp_path / "o"), *SMALL]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Labels_sky.txt:" in err and "'2'" in err


def test_coco_items_categories_and_captions(tmp_path):
  raw = make_coco(tmp_path / "raw", zipped=True)
  manifest = run("coco", raw, tmp_path / "out", "--rule", "vocab_size=5")
  out = tmp_path / "out"
  assert manifest["counts"]["items"] == COCO_KEPT and manifest["protocol"] == "clip"
  assert (out / "classes.txt").read_text().splitlines() == [n for _, n in COCO_CATEGORIES]  # the JSON's order
  ids = [int(i) for i in (out / "ids.txt").read_text().splitlines()]
  expected = [i for i in COCO_TRAIN if coco_categories(i)] + [i for i in COCO_VAL if coco_categories(i)]
  assert ids == expected  # train then val, each in numeric id order
  labels = np.load(out / "labels.npy")
  position = {c: k for k, (c, _) in enumerate(COCO_CATEGORIES)}
  for row, i in enumerate(ids):
    assert np.flatnonzero(labels[row]).tolist() == sorted({position[c] for c in coco_categories(i)})
  captions = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
  assert captions[ids.index(101)] == coco_captions(101) and len(captions[ids.index(101)]) == 7
  assert captions[ids.index(502)] == []
  assert manifest["notes"]["duplicated_captions"] == 2 and manifest["notes"]["images_without_instances"] == 8
  # every caption holds "a photo number ... of a ... variant": five words tied, taken alphabetically
  assert (out / "vocab.txt").read_text().splitlines() == ["a", "number", "of", "photo", "variant"]
  assert manifest["flags"]["not_jpeg"]["kept_ids"] == ["000000000104"]
  images = (out / "images.txt").read_text().splitlines()
  assert images[0] == "train2017/000000000101.jpg" and images[-1].startswith("val2017/")
  assert set(manifest["raw_files"]) == {"annotations_trainval2017.zip", "train2017.zip", "val2017.zip"}


def test_iapr_labels_cp1252_text_and_tar_archive(tmp_path):
  manifest = run("iapr", make_iapr(tmp_path / "raw"), tmp_path / "out")
  out = tmp_path / "out"
  assert manifest["counts"]["items"] == IAPR_KEPT and manifest["counts"]["labels"] == IAPR_LABELS
  assert manifest["counts"]["dropped"] == {"no_label": 5, "no_vocabulary_word": 3}
  ids = [int(i) for i in (out / "ids.txt").read_text().splitlines()]
  labels = np.load(out / "labels.npy")
  label_ids = [1, 2, 3, 4, 5, 6, 10, 11, 12]
  for row, i in enumerate(ids):
    assert [label_ids[k] for k in np.flatnonzero(labels[row])] == iapr_labels(i - 1000)
  assert "café" in (out / "vocab.txt").read_text(encoding="utf-8").splitlines()  # decoded as cp1252
  captions = [json.loads(line)[0] for line in (out / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
  assert captions[0] == "Photo 0 a mountain and mountain café;"
  manifest_tar = run("iapr", make_iapr(tmp_path / "tar", tar=True), tmp_path / "out-tar")
  assert "iaprtc12.tgz" in manifest_tar["raw_files"]
  a, b = digest(out), digest(tmp_path / "out-tar")
  assert {k: v for k, v in a.items() if k != "manifest.json"} == {k: v for k, v in b.items() if k != "manifest.json"}


def test_the_prepared_loader_reads_the_split_text_labels_and_matched_features(tmp_path):
  raw = make_mirflickr(tmp_path / "raw")
  manifest = run("mirflickr25k", raw, tmp_path / "out")
  out = tmp_path / "out"
  ds = data.load("prepared", out, image="tags")
  assert ds.name == "mirflickr25k-dcmh" and ds.num_items == manifest["counts"]["items"]
  assert ds.sizes() == {"query": 5, "retrieval": manifest["counts"]["items"] - 5, "train": 9, "val": 3}
  np.testing.assert_array_equal(ds.labels, np.load(out / "labels.npy"))
  rows = bow_rows(out)
  assert [np.flatnonzero(r).tolist() for r in ds.text] == rows
  ids = (out / "ids.txt").read_text().splitlines()
  rng = np.random.default_rng(0)
  order = rng.permutation(len(ids) + 3)  # the extract file holds extra ids, in another order
  all_ids = np.array(ids + ["im9998", "im9999", "other"])[order]
  features = rng.normal(size=(all_ids.size, 6)).astype(np.float32)
  np.savez(tmp_path / "feats.npz", features=features, ids=all_ids)
  ds = data.load("prepared", out, image_features=str(tmp_path / "feats.npz"))
  lookup = {i: features[k] for k, i in enumerate(all_ids)}
  np.testing.assert_allclose(ds.image, np.stack([lookup[i] for i in ids]), rtol=0, atol=0)
  np.savez(tmp_path / "short.npz", features=features[:4], ids=all_ids[:4])
  with pytest.raises(DataError, match="have no feature row"):
    data.load("prepared", out, image_features=str(tmp_path / "short.npz"))
  with pytest.raises(DataError, match="image_features="):
    data.load("prepared", out)
  with pytest.raises(DataError, match="no manifest.json"):
    data.load("prepared", tmp_path, image="tags")


def test_bad_coco_and_iapr_inputs_are_one_line_naming_the_file(tmp_path, capsys):
  def refused(dataset, raw, *needles):
    assert cli.main([dataset, "--raw", str(raw), "--out", str(tmp_path / "o"), *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
      assert needle in err, err
    assert not (tmp_path / "o").exists()

  raw = make_coco(tmp_path / "coco-json")
  (raw / "annotations" / "captions_val2017.json").write_text('{"annotations": [')
  refused("coco", raw, "captions_val2017.json", "not valid JSON")
  raw = make_coco(tmp_path / "coco-ref")
  path = raw / "annotations" / "instances_train2017.json"
  content = json.loads(path.read_text())
  content["annotations"][0]["category_id"] = 2  # not among the categories
  path.write_text(json.dumps(content))
  refused("coco", raw, "instances_train2017.json", "category 2")
  raw = make_coco(tmp_path / "coco-missing")
  (raw / "annotations" / "captions_train2017.json").unlink()
  refused("coco", raw, "captions_train2017.json")
  raw = make_iapr(tmp_path / "iapr")
  (raw / "saiapr_tc-12" / "01" / "labels.txt").write_text("1010 1 3\n1011 one 4\n")
  refused("iapr", raw, "saiapr_tc-12/01/labels.txt:2")
  raw = make_nuswide(tmp_path / "nus")
  path = raw / "NUS_WID_Tags" / "AllTags1k.txt"
  lines = path.read_text().splitlines(keepends=True)
  path.write_text("".join(lines[:5] + [lines[5].replace("0 ", "", 1)] + lines[6:]))
  refused("nuswide", raw, "AllTags1k.txt:6", f"{len(NUS_TAGS)} values")
