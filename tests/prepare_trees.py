"""Scaled-down raw trees in the exact layout of each official download, for tests/test_prepare*.py.

Each `make_*` writes a tree under a folder and returns it; the counts each protocol must give
are constants below, worked out by hand from the generating rules (the comments show how).
"""

from __future__ import annotations

import io
import json
import pathlib
import zipfile

import numpy as np
from PIL import Image

MIR_CONCEPTS = ("animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake",
                "male", "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures", "sunset",
                "transport", "tree", "water")
MIR_R1 = ("baby", "bird", "car", "clouds", "dog", "female", "flower", "male", "night", "people", "portrait", "river",
          "sea", "tree")


def jpeg(seed: int) -> bytes:
  """A tiny real JPEG (8x8, colour from `seed`)."""
  buffer = io.BytesIO()
  Image.new("RGB", (8, 8), ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256)).save(buffer, "JPEG")
  return buffer.getvalue()


def png() -> bytes:
  buffer = io.BytesIO()
  Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
  return buffer.getvalue()


def write_files(root: pathlib.Path, files: dict[str, bytes], zipped: dict[str, str] | None = None) -> pathlib.Path:
  """Write `files` (relative path -> bytes) under `root`; the paths starting with a prefix in
  `zipped` (prefix -> zip name) go into that zip instead, member names unchanged."""
  zipped = zipped or {}
  root.mkdir(parents=True, exist_ok=True)
  archives: dict[str, dict] = {}
  for rel, data in files.items():
    target = next((z for prefix, z in zipped.items() if rel.startswith(prefix)), None)
    if target is None:
      path = root / rel
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(data)
    else:
      archives.setdefault(target, {})[rel] = data
  for name, members in archives.items():
    with zipfile.ZipFile(root / name, "w", zipfile.ZIP_DEFLATED) as z:
      for rel, data in members.items():
        z.writestr(rel, data)
  return root


# ---------------------------------------------------------------------------------------------
# MIRFlickr-25K: 60 images.
#   labels: none if i % 10 == 0 (10, 20, 30, 40, 50, 60: 6 items), else concepts i % 24 and 7i % 24
#   tags: empty file if i % 15 == 0 (15, 30, 45, 60); only tags outside common_tags.txt if
#   i % 7 == 0 (7, 14, ..., 56: 8 items); else two common tags and one rare one.
#   labelled: 60 - 6 = 54. Labelled without a common tag: {15, 45} + the eight multiples of 7
#   (30 and 60 are unlabelled) = 10, so labelled-tagged: 54 - 10 = 44.
#   im3.jpg is a PNG (kept; flagged not_jpeg).
MIR_N = 60
MIR_LABELLED = 54
MIR_LABELLED_TAGGED = 44
MIR_VOCAB = [f"common{k}" for k in range(10)]


def mir_labels(i: int) -> list[int]:
  return [] if i % 10 == 0 else sorted({i % 24, (7 * i) % 24})


def mir_tags(i: int) -> list[str]:
  if i % 15 == 0:
    return []
  if i % 7 == 0:
    return [f"rare{i}", "zzrare"]
  return [MIR_VOCAB[i % 10], MIR_VOCAB[(i + 3) % 10], f"rare{i}"]


def make_mirflickr(root: pathlib.Path, *, zipped: bool = False, n: int = MIR_N, labels=None, tags=None,
                   vocab=None) -> pathlib.Path:
  """The two official downloads: mirflickr25k.zip (mirflickr/...) and the annotations zip
  (<concept>.txt with CRLF lines, the _r1 files and README.txt at its top level)."""
  labels = labels or mir_labels
  tags = tags or mir_tags
  vocab = vocab or MIR_VOCAB
  files = {}
  for i in range(1, n + 1):
    files[f"mirflickr/im{i}.jpg"] = png() if i == 3 else jpeg(i)
    files[f"mirflickr/meta/tags/tags{i}.txt"] = "".join(f"{t}\n" for t in tags(i)).encode()
    files[f"mirflickr/meta/tags_raw/tags{i}.txt"] = "".join(f"{t.upper()}\n" for t in tags(i)).encode()
  files["mirflickr/doc/common_tags.txt"] = "".join(f"{t} {40 - k}\n" for k, t in enumerate(vocab)).encode()
  members = {c: [] for c in MIR_CONCEPTS}
  for i in range(1, n + 1):
    for c in labels(i):
      members[MIR_CONCEPTS[c]].append(i)
  for concept, ids in members.items():
    files[f"{concept}.txt"] = "".join(f"{i}\r\n" for i in ids).encode()
  for concept in MIR_R1:
    files[f"{concept}_r1.txt"] = "".join(f"{i}\r\n" for i in members[concept][:2]).encode()
  files["README.txt"] = b"MIRFLICKR-25000 annotations\r\n"
  return write_files(root, files, {"mirflickr/": "mirflickr25k.zip", "": "mirflickr25k_annotations_v080.zip"}
                     if zipped else None)
