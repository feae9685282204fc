"""Scaled-down raw trees in the exact layout of each official download, for tests/test_prepare*.py.

Each `make_*` writes a tree under a folder and returns it; the counts each protocol must give
are constants below, worked out by hand from the generating rules (the comments show how).
"""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import zipfile

from PIL import Image

from jxhash.data.prepare import cli

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


# ---------------------------------------------------------------------------------------------
# NUS-WIDE: 60 images (i = 0..59), 81 concepts (the 21 of TC-21 and 60 others), 30 "1k" tags.
#   labels: none if i % 6 == 5 (10 items); one non-TC-21 concept if i % 6 == 4 (10 items, each
#   a different concept: frequency 1); else TC-21 concepts i % 21 and (i + 5) % 21 (40 items;
#   every TC-21 concept gets >= 2, so the 21 most frequent are exactly TC-21).
#   1k tags: none if i % 10 == 3 (3, 13, 23, 33, 43, 53; of these 3, 13, 33, 43 are labelled).
#   DCMH (>= 1 label): 40. MITH (also >= 1 of the 1k tags): 40 - 4 = 36.
#   Quirks: Imagelist.txt with backslashes; a duplicated flickr id (items 7 and 8);
#   a GIF named .jpg (item 12); item 13 has no tags at all; TrainTestLabels/Labels_lake_Train.txt holds the
#   official bad line "-1130179" (not read).
NUS_N = 60
NUS_LABELLED = 40
NUS_LABELLED_TAGGED = 36
NUS_TC21 = ("animal", "beach", "buildings", "clouds", "flowers", "grass", "lake", "mountain", "ocean", "person",
            "plants", "reflection", "road", "rocks", "sky", "snow", "sunset", "tree", "vehicle", "water", "window")
NUS_OTHERS = tuple(f"other{k:02d}" for k in range(60))
NUS_TAGS = tuple(f"tag{k:02d}" for k in range(30))


def nus_labels(i: int) -> list[str]:
  if i % 6 == 5:
    return []
  if i % 6 == 4:
    return [NUS_OTHERS[i // 6]]
  return [NUS_TC21[i % 21], NUS_TC21[(i + 5) % 21]]


def nus_1k(i: int) -> list[int]:
  return [] if i % 10 == 3 else sorted({i % 30, (3 * i + 1) % 30})


def nus_flickr(i: int) -> str:
  return str(2000000000 + (7 if i == 8 else i))


def make_nuswide(root: pathlib.Path, *, zipped: bool = False) -> pathlib.Path:
  folders = [("actor", "animal", "beach")[i % 3] for i in range(NUS_N)]
  names = [f"{i:04d}_{nus_flickr(i)}.jpg" for i in range(NUS_N)]
  files = {"ImageList/Imagelist.txt": "".join(f"{f}\\{n}\r\n" for f, n in zip(folders, names)).encode(),
           "Concepts81.txt": "".join(f"{c}\r\n" for c in sorted(NUS_TC21 + NUS_OTHERS)).encode()}
  for concept in NUS_TC21 + NUS_OTHERS:
    files[f"Groundtruth/AllLabels/Labels_{concept}.txt"] = "".join(
        f"{int(concept in nus_labels(i))}\n" for i in range(NUS_N)).encode()
  files["Groundtruth/TrainTestLabels/Labels_lake_Train.txt"] = b"0\n1\n-1130179\n0\n"
  files["NUS_WID_Tags/TagList1k.txt"] = "".join(f"{t}\n" for t in NUS_TAGS).encode()
  files["NUS_WID_Tags/AllTags1k.txt"] = "".join(
      " ".join("1" if k in nus_1k(i) else "0" for k in range(len(NUS_TAGS))) + " \n" for i in range(NUS_N)).encode()
  files["NUS_WID_Tags/All_Tags.txt"] = "".join(
      f"{nus_flickr(i)}      " + " ".join([NUS_TAGS[k] for k in nus_1k(i)] + ([] if i == 13 else [f"word{i}"]))
      + "\n" for i in range(NUS_N)).encode()
  for i, (folder, name) in enumerate(zip(folders, names)):
    if i == 12:
      buffer = io.BytesIO()
      Image.new("RGB", (8, 8)).save(buffer, "GIF")
      files[f"Flickr/{folder}/{name}"] = buffer.getvalue()
    else:
      files[f"Flickr/{folder}/{name}"] = jpeg(i)
  zips = {"ImageList/": "ImageList.zip", "Concepts81": "ConceptsList.zip", "Groundtruth/": "Groundtruth.zip",
          "NUS_WID_Tags/": "NUS_WID_Tags.zip", "Flickr/": "Flickr.zip"}
  return write_files(root, files, zips if zipped else None)


# ---------------------------------------------------------------------------------------------
# MS-COCO 2017: train2017 images 1..30 (ids 101..130), val2017 images 1..10 (ids 501..510).
#   categories: 5, ids 1, 3, 90, 7, 12 in that JSON order (not sorted: the order is the JSON's).
#   no instance: train ids 105, 110, ..., 130 (6 items) and val id 505, 510 (2) -> kept 40 - 8 = 32.
#   captions: 5 per image, image 101 has 7 (two of them duplicates); one val image has none (502).
#   train2017/000000000103.jpg is grayscale; 000000000104.jpg is a PNG named .jpg.
COCO_TRAIN = tuple(range(101, 131))
COCO_VAL = tuple(range(501, 511))
COCO_KEPT = 32
COCO_CATEGORIES = ((1, "person"), (3, "car"), (90, "toothbrush"), (7, "train"), (12, "stop sign"))


def coco_categories(image_id: int) -> list[int]:
  """Category ids of an image's instances (may repeat: several instances of one category)."""
  if image_id % 5 == 0:
    return []
  return [COCO_CATEGORIES[image_id % 5][0], COCO_CATEGORIES[image_id % 5][0], COCO_CATEGORIES[(image_id // 5) % 5][0]]


def coco_captions(image_id: int) -> list[str]:
  if image_id == 502:
    return []
  out = [f"A photo number {image_id} of a {COCO_CATEGORIES[image_id % 5][1]}. Variant {k}." for k in range(5)]
  if image_id == 101:
    out += [out[0], out[1]]
  return out


def make_coco(root: pathlib.Path, *, zipped: bool = False) -> pathlib.Path:
  files = {}
  ann_id = 1
  for part, ids in (("train2017", COCO_TRAIN), ("val2017", COCO_VAL)):
    order = sorted(ids, key=lambda i: (i * 7919) % 97)  # the JSON lists images in no particular order
    images = [{"license": 1, "file_name": f"{i:012d}.jpg", "height": 8, "width": 8, "id": i} for i in order]
    instances, captions = [], []
    for i in order:
      for c in coco_categories(i):
        instances.append({"segmentation": [[0, 0, 1, 1, 1, 0]], "area": 1.0, "iscrowd": 0, "image_id": i,
                          "bbox": [0, 0, 1, 1], "category_id": c, "id": ann_id})
        ann_id += 1
      for text in coco_captions(i):
        captions.append({"image_id": i, "id": ann_id, "caption": text})
        ann_id += 1
    categories = [{"supercategory": "thing", "id": c, "name": n} for c, n in COCO_CATEGORIES]
    info = {"description": "COCO 2017 Dataset", "year": 2017}
    files[f"annotations/instances_{part}.json"] = json.dumps(
        {"info": info, "licenses": [], "images": images, "annotations": instances, "categories": categories}).encode()
    files[f"annotations/captions_{part}.json"] = json.dumps(
        {"info": info, "licenses": [], "images": images, "annotations": captions}).encode()
    for i in ids:
      if i == 103:
        buffer = io.BytesIO()
        Image.new("L", (8, 8), 128).save(buffer, "JPEG")
        files[f"{part}/{i:012d}.jpg"] = buffer.getvalue()
      else:
        files[f"{part}/{i:012d}.jpg"] = png() if i == 104 else jpeg(i)
  zips = {"annotations/": "annotations_trainval2017.zip", "train2017/": "train2017.zip", "val2017/": "val2017.zip"}
  return write_files(root, files, zips if zipped else None)


# ---------------------------------------------------------------------------------------------
# IAPR TC-12: 40 images in folders 00..03 (ids 1000 + i), .eng files in cp1252.
#   labels (SAIAPR labels.txt, region lines): none if i % 8 == 7 (5 items); else labels
#   1 + i % 6 and 10 + i % 3 (over two regions) -> label ids {1..6, 10, 11, 12}: 9 labels.
#   text: description "a <w1> and <w2> café" with w1 = word(i % 7), w2 = word(i % 5);
#   i % 13 == 4 (4, 17, 30) has an empty title and description (the irregular file);
#   labelled 35; of these 4, 17, 30 have no word -> kept 32.
IAPR_N = 40
IAPR_KEPT = 32
IAPR_LABELS = 9
IAPR_WORDS = ("mountain", "river", "house", "tree", "street", "woman", "boat")


def iapr_labels(i: int) -> list[int]:
  return [] if i % 8 == 7 else sorted({1 + i % 6, 10 + i % 3})


def iapr_eng(i: int) -> bytes:
  if i % 13 == 4:
    title = description = ""
  else:
    title = f"Photo {i}"
    description = f"a {IAPR_WORDS[i % 7]} and {IAPR_WORDS[i % 5]} caf\u00e9;"
  folder = f"{i // 10:02d}"
  text = (f"<DOC>\r\n<DOCNO>annotations/{folder}/{1000 + i}.eng</DOCNO>\r\n<TITLE>{title}</TITLE>\r\n"
          f"<DESCRIPTION>{description}</DESCRIPTION>\r\n<NOTES></NOTES>\r\n<LOCATION>Cochabamba, Bolivia</LOCATION>\r\n"
          f"<DATE>February 2002</DATE>\r\n<IMAGE>images/{folder}/{1000 + i}.jpg</IMAGE>\r\n"
          f"<THUMBNAIL>thumbnails/{folder}/{1000 + i}.jpg</THUMBNAIL>\r\n</DOC>\r\n")
  return text.encode("cp1252")


def make_iapr(root: pathlib.Path, *, tar: bool = False) -> pathlib.Path:
  import tarfile
  files = {}
  for i in range(IAPR_N):
    folder = f"{i // 10:02d}"
    files[f"iaprtc12/images/{folder}/{1000 + i}.jpg"] = jpeg(i)
    files[f"iaprtc12/annotations_complete_eng/{folder}/{1000 + i}.eng"] = iapr_eng(i)
  lines = {}
  for i in range(IAPR_N):
    labels = iapr_labels(i)
    for region, label in enumerate(labels, 1):
      lines.setdefault(f"{i // 10:02d}", []).append(f"{1000 + i} {region} {label}\n")
  for folder, rows in lines.items():
    files[f"saiapr_tc-12/{folder}/labels.txt"] = "".join(rows).encode()
  root.mkdir(parents=True, exist_ok=True)
  if not tar:
    return write_files(root, files)
  with tarfile.open(root / "iaprtc12.tgz", "w:gz") as archive:
    for rel, data in files.items():
      if rel.startswith("iaprtc12/"):
        info = tarfile.TarInfo(rel)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
  return write_files(root, {k: v for k, v in files.items() if not k.startswith("iaprtc12/")})


# `prepare` on a generated tree: small split sizes, the manifest back, and a folder's file digests
SMALL = ["--rule", "num_query=5", "--rule", "num_train=12", "--rule", "num_val=3", "--no-progress"]


def run(dataset, raw, out, *extra) -> dict:
  assert cli.main([dataset, "--raw", str(raw), "--out", str(out), *SMALL, *extra]) == 0
  return json.loads((out / "manifest.json").read_text())


def digest(folder: pathlib.Path) -> dict:
  return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
