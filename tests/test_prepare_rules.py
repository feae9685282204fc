"""`prepare` rules taken from one lineage's scripts: DSPH's NUS-WIDE not-used list and MITH's one
caption per COCO image, on the generated trees of tests/prepare_trees.py."""

from __future__ import annotations

import hashlib
import json
import pathlib
import random

import pytest

from jxhash.data.prepare import cli, common
from prepare_trees import (SMALL, digest, run, COCO_TRAIN, COCO_VAL, NUS_N, NUS_TC21, coco_captions, coco_categories, make_coco,
                           make_nuswide, nus_1k, nus_labels)



def refused(capsys, code: int, *needles) -> None:
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
  for needle in needles:
    assert needle in err, err


# -- NUS-WIDE: DSPH's not-used-id.txt ---------------------------------------------------------


def tc21(i: int) -> bool:
  return bool(set(nus_labels(i)) & set(NUS_TC21))


def dsph_list(path: pathlib.Path, rows, *, offset: int = 2) -> pathlib.Path:
  """A list in the format of DSPH's dataset/not-used-id.txt: ascending numbers, CRLF, no final line end."""
  path.write_bytes("\r\n".join(str(r + offset) for r in sorted(rows)).encode())
  return path


def nus_items(out: pathlib.Path) -> list[int]:
  return [int(i.split("_")[0]) for i in (out / "ids.txt").read_text().splitlines()]


def test_the_dsph_list_of_unlabelled_images_keeps_the_labelled_ones(tmp_path):
  raw = make_nuswide(tmp_path / "raw")
  unlabelled = [i for i in range(NUS_N) if not tc21(i)]
  listed = dsph_list(tmp_path / "not-used-id.txt", unlabelled)
  manifest = run("nuswide", raw, tmp_path / "out", "--rule", f"not_used={listed}")
  assert nus_items(tmp_path / "out") == [i for i in range(NUS_N) if tc21(i)]
  assert manifest["counts"]["dropped"] == {"not_used": len(unlabelled), "no_label": 0}
  note = manifest["notes"]["not_used"]
  assert note["listed"] == len(unlabelled) and note["offset"] == 2
  assert note["listed_with_label"] == 0 and note["unlisted_without_label"] == 0
  assert note["sha256"] == hashlib.sha256(listed.read_bytes()).hexdigest() and note["file"] == str(listed.resolve())
  assert manifest["rules"]["not_used"] == str(listed) and manifest["rules"]["not_used_offset"] == 2
  run("nuswide", raw, tmp_path / "again", "--rule", f"not_used={listed}")
  assert digest(tmp_path / "out") == digest(tmp_path / "again")


def test_the_offset_decides_which_images_a_dsph_list_removes(tmp_path):
  raw = make_nuswide(tmp_path / "raw")
  unlabelled = [i for i in range(NUS_N - 1) if not tc21(i)]  # not the last image: it would shift out of range
  listed = dsph_list(tmp_path / "list.txt", unlabelled)  # written for offset 2, read with offset 1
  manifest = run("nuswide", raw, tmp_path / "out", "--rule", f"not_used={listed}", "--rule", "not_used_offset=1",
                 "--rule", "keep=labelled-tagged")
  removed = {i + 1 for i in unlabelled}
  expected = [i for i in range(NUS_N) if i not in removed and tc21(i) and nus_1k(i)]
  assert nus_items(tmp_path / "out") == expected
  note = manifest["notes"]["not_used"]
  assert note["listed_with_label"] == sum(tc21(i) for i in removed)
  assert note["unlisted_without_label"] == sum(not tc21(i) for i in range(NUS_N) if i not in removed)
  assert note["listed_with_label"] > 0  # the check that tells a shifted list
  assert manifest["counts"]["dropped"] == {
      "not_used": len(removed), "no_label": note["unlisted_without_label"],
      "no_1k_tag": sum(tc21(i) and not nus_1k(i) for i in range(NUS_N) if i not in removed)}


def test_a_bad_dsph_list_is_one_line_before_the_long_reads(tmp_path, capsys):
  raw = make_nuswide(tmp_path / "raw")

  def prepare(text: bytes | None, *extra):
    path = tmp_path / "list.txt"
    path.unlink(missing_ok=True)
    if text is not None:
      path.write_bytes(text)
    return cli.main(["nuswide", "--raw", str(raw), "--out", str(tmp_path / "o"), *SMALL, "--rule",
                     f"not_used={path}", *extra])

  refused(capsys, prepare(b"10\r\nx1\r\n"), "list.txt:2", "'x1'")
  refused(capsys, prepare(b"10\r\n1\r\n"), "list.txt:2", "= -1", "not_used_offset")
  refused(capsys, prepare(f"10\n{NUS_N + 2}\n".encode()), "list.txt:2", f"{NUS_N} images")
  refused(capsys, prepare(b"10\n11\n10\n"), "list.txt:3", "listed twice")
  refused(capsys, prepare(None), "not_used=", "list.txt")
  refused(capsys, prepare(b"10\n", "--rule", "not_used_offset=-1"), "not_used_offset")
  assert not (tmp_path / "o").exists()
  assert prepare(b"\r\n12\r\n\r\n") == 0  # blank lines are skipped
  assert json.loads((tmp_path / "o" / "manifest.json").read_text())["notes"]["not_used"]["listed"] == 1


def test_an_edited_list_restarts_a_resumed_run(tmp_path, monkeypatch):
  raw = make_nuswide(tmp_path / "raw")
  listed = dsph_list(tmp_path / "list.txt", [0, 1])

  def crash(name):
    raise RuntimeError(name)

  monkeypatch.setattr(common, "after_step", crash)
  with pytest.raises(RuntimeError):
    cli.main(["nuswide", "--raw", str(raw), "--out", str(tmp_path / "out"), *SMALL, "--rule", f"not_used={listed}"])
  monkeypatch.setattr(common, "after_step", lambda name: None)
  dsph_list(listed, [0, 1, 2])  # same path, other content: the scan must be redone
  manifest = run("nuswide", raw, tmp_path / "out", "--rule", f"not_used={listed}")
  assert manifest["notes"]["not_used"]["listed"] == 3 and 2 not in nus_items(tmp_path / "out")


# -- COCO: one caption per image ----------------------------------------------------------------


def coco_rows(out: pathlib.Path) -> tuple[list[int], list[list[str]]]:
  ids = [int(i) for i in (out / "ids.txt").read_text().splitlines()]
  return ids, [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]


def test_caption_first_keeps_the_first_caption_of_the_json(tmp_path):
  manifest = run("coco", make_coco(tmp_path / "raw"), tmp_path / "out", "--rule", "caption=first")
  ids, captions = coco_rows(tmp_path / "out")
  assert captions == [coco_captions(i)[:1] for i in ids]
  assert manifest["captions_per_item"]["histogram"] == {"0": 1, "1": len(ids) - 1}  # image 502 has none
  assert manifest["notes"]["duplicated_captions"] == 2  # a fact of the files, whatever is kept


def test_caption_draw_follows_mith_one_seeded_draw_per_image_in_item_order(tmp_path):
  raw = make_coco(tmp_path / "raw", zipped=True)
  manifest = run("coco", raw, tmp_path / "out", "--rule", "caption=draw", "--rule", "caption_seed=1")
  ids, captions = coco_rows(tmp_path / "out")
  # the reference: Python's random seeded with 1 (MITH's random.seed(1)), one randrange per image,
  # train2017 then val2017 in numeric id order, images without instances included
  reference = random.Random()
  reference.seed(1)
  drawn = {}
  for i in sorted(COCO_TRAIN) + sorted(COCO_VAL):
    texts = coco_captions(i)
    k = reference.randrange(max(len(texts), 1))
    drawn[i] = texts[k:k + 1]
  assert captions == [drawn[i] for i in ids]
  assert len({c[0].rsplit(" ", 1)[-1] for c in captions if c}) > 2  # not always the same variant
  assert manifest["rules"]["caption"] == "draw" and manifest["rules"]["caption_seed"] == 1
  skipping = random.Random(1)  # drawing only for the kept images would give other captions
  assert [coco_captions(i)[skipping.randrange(max(len(coco_captions(i)), 1))] for i in ids[:8]] != \
      [c[0] for c in captions[:8]]
  run("coco", raw, tmp_path / "again", "--rule", "caption=draw", "--rule", "caption_seed=1")
  assert digest(tmp_path / "out") == digest(tmp_path / "again")
  run("coco", raw, tmp_path / "seed2", "--rule", "caption=draw", "--rule", "caption_seed=2")
  assert coco_rows(tmp_path / "seed2")[1] != captions


def test_the_clip_mith_protocol_draws_one_caption_cut_at_its_first_period(tmp_path):
  manifest = run("coco", make_coco(tmp_path / "raw"), tmp_path / "out", "--protocol", "clip-mith",
                 "--rule", "vocab_size=50")
  ids, captions = coco_rows(tmp_path / "out")
  names = {c: n for c, n in ((1, "person"), (3, "car"), (90, "toothbrush"), (7, "train"), (12, "stop sign"))}
  for i, texts in zip(ids, captions):
    assert texts == ([] if i == 502 else [f"A photo number {i} of a {names[coco_categories(i)[0]]}"])
  assert manifest["rules"]["caption_trim"] == "before-first-period" and manifest["protocol"] == "clip-mith"
  vocab = (tmp_path / "out" / "vocab.txt").read_text().splitlines()
  assert "variant" not in vocab and "photo" in vocab  # the bag-of-words reads the kept text only
