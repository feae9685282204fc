"""Peak memory of `prepare coco` on a generated raw tree the size of the real annotations.

    python experiments/coco_memory.py --work /tmp/coco-memory [--zipped]   # ~600 MB there, removed after

Writes annotations/instances_train2017.json in the real file's structure and at its size (118,287
images, 860,001 annotations with polygon segmentations of realistic length and 1% crowd RLE
ones, about 448 MiB), captions_train2017.json (591,753 captions), val2017 files at their real
counts, and train2017.zip / val2017.zip holding a 3-byte JPEG signature per image (with
--zipped the annotations go into annotations_trainval2017.zip, as downloaded); then runs
`python -m jxhash.data.prepare coco` in a child process and prints its peak resident memory
(ru_maxrss of the child) and its wall time. The numbers are in docs/data.md ("Memory").
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np

# The real 2017 counts (images, annotations, images without any instance, captions).
PARTS = {"train2017": (118287, 860001, 1021, 591753), "val2017": (5000, 36781, 48, 25014)}
# 80 categories with COCO's gaps in the ids 1..90.
CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
WORDS = ("a man woman dog cat sitting standing on in the of with next to table street red large small two people "
         "white black bus train plate food riding holding near field group view").split()


def _numbers(rng, size: int) -> list[str]:
  """Coordinates as COCO writes them (two decimals, no trailing zeros)."""
  return [f"{v:.2f}".rstrip("0").rstrip(".") for v in rng.uniform(0, 640, size)]


def image_entries(part: str, ids: list[int]) -> str:
  return ",".join(json.dumps(
      {"license": 1 + i % 8, "file_name": f"{i:012d}.jpg", "coco_url": f"http://images.cocodataset.org/{part}/{i:012d}.jpg",
       "height": 480, "width": 640, "date_captured": "2013-11-14 11:18:45",
       "flickr_url": "http://farm4.staticflickr.com/3153/2970773875_164f0c0b83_z.jpg", "id": i}, separators=(",", ":"))
      for i in ids)


def write_instances(path: pathlib.Path, part: str, counts, rng, first_id: int) -> list[int]:
  images, annotations, empty, _ = counts
  ids = np.sort(rng.choice(np.arange(first_id, first_id + 5 * images), images, replace=False))
  labelled = np.sort(rng.choice(ids, images - empty, replace=False))
  owners = np.concatenate([labelled, rng.choice(labelled, annotations - labelled.size)])
  rng.shuffle(owners)
  pool = _numbers(rng, 1 << 16)
  with open(path, "w") as f:
    f.write('{"info":{"description":"COCO 2017 Dataset","url":"http://cocodataset.org","version":"1.0",'
            '"year":2017,"contributor":"COCO Consortium","date_created":"2017/09/01"},"licenses":[')
    f.write(",".join(json.dumps({"url": f"http://creativecommons.org/licenses/{k}/2.0/", "id": k,
                                 "name": "Attribution License"}, separators=(",", ":")) for k in range(1, 9)))
    f.write('],"images":[')
    f.write(image_entries(part, ids.tolist()))
    f.write('],"annotations":[')
    lengths = 2 * rng.geometric(1 / 28, annotations)  # polygon coordinates: mean about 56
    crowd = rng.random(annotations) < 0.01
    for k in range(annotations):
      if crowd[k]:
        segmentation = '{"counts":[' + ",".join(map(str, rng.integers(0, 400, 300).tolist())) + '],"size":[480,640]}'
      else:
        picks = rng.integers(0, len(pool), int(lengths[k]))
        segmentation = "[[" + ",".join(pool[p] for p in picks.tolist()) + "]]"
      f.write(("," if k else "") + '{"segmentation":' + segmentation + f',"area":{rng.uniform(10, 90000)!r},'
              f'"iscrowd":{int(crowd[k])},"image_id":{int(owners[k])},"bbox":[{",".join(pool[:4])}],'
              f'"category_id":{CATEGORY_IDS[int(rng.integers(0, 80))]},"id":{k + 1}}}')
    f.write('],"categories":[')
    f.write(",".join(json.dumps({"supercategory": "thing", "id": c, "name": f"category{c}"}, separators=(",", ":"))
                     for c in CATEGORY_IDS))
    f.write("]}")
  return ids.tolist()


def write_captions(path: pathlib.Path, part: str, ids: list[int], count: int, rng) -> None:
  owners = np.concatenate([np.array(ids), rng.choice(ids, count - len(ids))])
  with open(path, "w") as f:
    f.write('{"info":{},"licenses":[],"images":[' + image_entries(part, ids) + '],"annotations":[')
    for k, i in enumerate(owners.tolist()):
      text = " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), 10).tolist()).capitalize() + "."
      f.write(("," if k else "") + json.dumps({"image_id": i, "id": k + 1, "caption": text}, separators=(",", ":")))
    f.write("]}")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--work", required=True, help="scratch folder (created, and removed afterwards)")
  p.add_argument("--zipped", action="store_true", help="read the annotations from annotations_trainval2017.zip")
  p.add_argument("--keep", action="store_true", help="keep the scratch folder; a later run on it measures again "
                 "without generating")
  args = p.parse_args(argv)
  work = pathlib.Path(args.work)
  raw = work / "raw"
  reuse = (work / "generated").is_file()
  if work.exists() and not reuse:
    sys.exit(f"error: --work {work} exists and was not kept by this script; give a new folder")
  shutil.rmtree(work / "out", ignore_errors=True)
  (raw / "annotations").mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(0)
  try:
    start, first_id = time.time(), 1  # disjoint image ids in each part
    for part, counts in ({} if reuse else PARTS).items():
      ids = write_instances(raw / "annotations" / f"instances_{part}.json", part, counts, rng, first_id)
      first_id += 5 * counts[0]
      write_captions(raw / "annotations" / f"captions_{part}.json", part, ids, counts[3], rng)
      with zipfile.ZipFile(raw / f"{part}.zip", "w", zipfile.ZIP_STORED) as z:
        for i in ids:
          z.writestr(f"{part}/{i:012d}.jpg", b"\xff\xd8\xff")
    (work / "generated").touch()
    sizes = {p.name: p.stat().st_size for p in sorted(raw.rglob("*")) if p.is_file()}
    made = "reused" if reuse else f"generated in {time.time() - start:.0f} s"
    print(f"{made}: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items()), flush=True)
    if args.zipped:  # the annotations as downloaded: annotations_trainval2017.zip (deflated)
      zipped = work / "raw-zipped"
      if not zipped.is_dir():
        zipped.mkdir()
        for part in PARTS:
          os.link(raw / f"{part}.zip", zipped / f"{part}.zip")
        with zipfile.ZipFile(zipped / "annotations_trainval2017.zip", "w", zipfile.ZIP_DEFLATED) as z:
          for path in sorted((raw / "annotations").iterdir()):
            z.write(path, f"annotations/{path.name}")
      raw = zipped
    start = time.time()
    command = [sys.executable, "-m", "jxhash.data.prepare", "coco", "--raw", str(raw), "--out", str(work / "out"),
               "--no-progress"]
    subprocess.run(command, check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    print(f"prepare coco: peak RSS {peak / 2**30:.2f} GiB, {time.time() - start:.0f} s")
  finally:
    if not args.keep:
      shutil.rmtree(work, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
