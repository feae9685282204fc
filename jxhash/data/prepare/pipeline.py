"""The steps of `prepare`: scan the raw tree, select and write the items, split, write the manifest.

Output (one protocol folder, read by the `prepared` loader, `jxhash/data/prepared.py`):

  ids.txt          one item id per line (the image file name without extension)
  images.txt       the image of each item, relative to the raw root as laid out once extracted
  labels.npy       (N, C) uint8 multi-hot; classes.txt names the columns
  text_bow.npz     the (N, V) 0/1 bag-of-words as CSR: indptr (N+1,) int64, indices int32, shape
  vocab.txt        the V words or tags, in column order
  captions.jsonl   per item a JSON list of raw strings (tags joined by spaces, or captions)
  splits.npz       query, retrieval, train, val: sorted int64 row indices
  manifest.json    what was read (sha256), the rules, the counts and statistics
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np

import jxhash
from jxhash import fileio
from jxhash.data.prepare import common
from jxhash.data.prepare.table import Table
from jxhash.errors import DataError

OUTPUTS = ("ids.txt", "images.txt", "labels.npy", "classes.txt", "text_bow.npz", "vocab.txt", "captions.jsonl",
           "splits.npz", common.MANIFEST)
FORMAT = "jxhash-prepared-1"


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One dataset's preparation: its rules, protocols and scan.

  Attributes:
    name: the dataset name (the CLI's first argument).
    rules: a `jxhash.data.options.Schema` of the rule options (with neutral defaults).
    protocols: protocol name -> rule values that define it (a preset over `rules`).
    default_protocol: used when --protocol is not given.
    scan: (tree, rules, show_progress) -> Table of every raw item.
    select: (table, rules) -> (bool keep mask, {reason: items dropped}).
    keep_tar: which tar members a scan reads (see RawTree).
  """

  name: str
  rules: object
  protocols: dict
  default_protocol: str
  scan: object
  select: object
  keep_tar: object = lambda name: False


def resolve_rules(dataset: Dataset, protocol: str, given: dict) -> dict:
  """The protocol's preset, overridden by `given`, checked by the dataset's rule schema."""
  if protocol not in dataset.protocols:
    raise DataError(f"{dataset.name}: unknown protocol {protocol!r}; choose from {sorted(dataset.protocols)}")
  return dataset.rules.check({**dataset.protocols[protocol], **given})


def raw_identity(tree: common.RawTree) -> dict:
  """What tells two raw trees apart cheaply (for resuming): archives' sizes and mtimes, file count."""
  archives = {}
  for rel in sorted(tree.archives):
    stat = (tree.root / rel).stat()
    archives[rel] = [stat.st_size, stat.st_mtime_ns]
  return {"root": str(tree.root), "archives": archives, "files": len(tree.files)}


def rule_files(dataset: Dataset, rules: dict) -> dict:
  """The files that rules name (kind "path"): resolved path, size and mtime, so that resuming
  with the same rules but an edited file starts afresh."""
  files = {}
  for option in dataset.rules:
    if option.kind == "path" and rules.get(option.name) is not None:
      path = fileio.resolve(rules[option.name])
      try:
        stat = path.stat()
        files[option.name] = [str(path), stat.st_size, stat.st_mtime_ns]
      except OSError:
        files[option.name] = [str(path), None, None]  # the scan says what is wrong with it
  return files


def prepare(dataset: Dataset, raw, out, *, protocol: str | None = None, rules: dict | None = None,
            overwrite: bool = False, show_progress: bool = True) -> dict:
  """Prepare one protocol folder from the official downloads in `raw`; returns the manifest."""
  protocol = protocol or dataset.default_protocol
  resolved = resolve_rules(dataset, protocol, rules or {})
  tree = common.RawTree(raw, keep_tar=dataset.keep_tar)
  try:
    settings = {"format": FORMAT, "dataset": dataset.name, "protocol": protocol, "rules": resolved,
                "raw": raw_identity(tree)}
    files = rule_files(dataset, resolved)
    if files:
      settings["rule_files"] = files
    work = common.Workspace(out, settings, overwrite=overwrite)
    scan_dir = work.path("_scan")

    def scan():
      table = dataset.scan(tree, resolved, show_progress)
      tree.hash_archives()
      scan_dir.mkdir(exist_ok=True)
      table.save(scan_dir)
      work.write("_raw_files.json", common.json_text(tree.hashes))

    work.run("scan", scan)
    table = Table.load(scan_dir)
    keep, dropped = dataset.select(table, resolved)
    kept = table.take(np.flatnonzero(keep))
    if len(kept) == 0:
      raise DataError(f"{dataset.name}: no item passes the rules of protocol {protocol!r} in {tree.root}")
    work.run("write", lambda: write_items(work, kept))
    work.run("split", lambda: write_split(work, len(kept), resolved))
    raw_files = json.loads(work.path("_raw_files.json").read_text())

    def manifest():
      work.write(common.MANIFEST, common.json_text(build_manifest(dataset, protocol, resolved, table, kept,
                                                                  dropped, raw_files, work)))

    work.run("manifest", manifest)
    result = json.loads(work.path(common.MANIFEST).read_text())
    work.finish(OUTPUTS)
    return result
  finally:
    tree.close()


def write_items(work: common.Workspace, table: Table) -> None:
  if len(set(table.ids)) != len(table.ids):
    dup = [k for k, v in Counter(table.ids).items() if v > 1][0]
    raise DataError(f"item id {dup!r} occurs more than once among the kept items; ids must be unique")
  work.write("ids.txt", common.lines_text(table.ids))
  work.write("images.txt", common.lines_text(table.images))
  work.write("labels.npy", common.npy_bytes(table.labels.astype(np.uint8)))
  work.write("classes.txt", common.lines_text(table.classes))
  work.write("text_bow.npz", common.npz_bytes({
      "indptr": table.indptr.astype(np.int64), "indices": table.indices.astype(np.int32),
      "shape": np.array([len(table), len(table.vocab)], np.int64)}))
  work.write("vocab.txt", common.lines_text(table.vocab))
  work.write("captions.jsonl", common.jsonl_text(table.captions))


def split_indices(n: int, *, num_query: int, num_train: int, num_val: int, seed: int, val_from: str) -> dict:
  """The protocol split of `n` items (sorted int64 index arrays).

  A permutation seeded by `seed` (numpy's default_rng): its first `num_query` items are the
  queries, the retrieval set is every other item, and the training items are the first
  `num_train` of the retrieval set (train inside retrieval: the DCMH and CLIP-lineage rule).
  val (`num_val` items, never queries): val_from="train" carves it from the end of the drawn
  training items (train then holds num_train - num_val); val_from="retrieval" takes it from the
  end of the retrieval items outside train (train keeps num_train, as published).
  """
  if num_query + num_train > n:
    raise DataError(f"split sizes num_query={num_query} + num_train={num_train} exceed the {n} items kept")
  order = np.random.default_rng(seed).permutation(n)
  query, rest = order[:num_query], order[num_query:]
  train = rest[:num_train]
  if val_from == "train":
    if num_val >= train.size:
      raise DataError(f"num_val={num_val} leaves no training items (num_train={num_train})")
    val, train = train[train.size - num_val:], train[:train.size - num_val]
  else:
    spare = rest[num_train:]
    if num_val > spare.size:
      raise DataError(f"num_val={num_val} exceeds the {spare.size} retrieval items outside train")
    val = spare[spare.size - num_val:]
  return {k: np.sort(v).astype(np.int64) for k, v in
          {"query": query, "retrieval": rest, "train": train, "val": val}.items()}


def write_split(work: common.Workspace, n: int, rules: dict) -> None:
  parts = split_indices(n, num_query=rules["num_query"], num_train=rules["num_train"], num_val=rules["num_val"],
                        seed=rules["split_seed"], val_from=rules["val_from"])
  work.write("splits.npz", common.npz_bytes(parts))


def _histogram(values: np.ndarray) -> dict:
  counts = np.bincount(np.asarray(values, np.int64)) if len(values) else np.zeros(0, np.int64)
  return {str(k): int(c) for k, c in enumerate(counts) if c}


def _summary(values: np.ndarray) -> dict:
  values = np.asarray(values)
  if values.size == 0:
    return {"min": 0, "max": 0, "mean": 0.0, "histogram": {}}
  return {"min": int(values.min()), "max": int(values.max()), "mean": round(float(values.mean()), 4),
          "histogram": _histogram(values)}


def build_manifest(dataset: Dataset, protocol: str, rules: dict, table: Table, kept: Table, dropped: dict,
                   raw_files: dict, work: common.Workspace) -> dict:
  with np.load(work.path("splits.npz")) as f:
    sizes = {k: int(f[k].size) for k in f.files}
  outputs = {name: common.sha256_file(work.path(name)) for name in OUTPUTS if name != common.MANIFEST}
  return {
      "format": FORMAT,
      "dataset": dataset.name,
      "protocol": protocol,
      "rules": rules,
      "image_paths": "relative to the raw root, as laid out once the archives are extracted",
      "counts": {"raw_items": len(table), "items": len(kept), "dropped": dropped, "labels": len(kept.classes),
                 "vocabulary": len(kept.vocab), "splits": sizes},
      "label_counts": dict(zip(kept.classes, kept.labels.sum(0).astype(int).tolist())),
      "labels_per_item": _summary(kept.labels.sum(1)),
      "tags_per_item": _summary(kept.tags_per_item()),
      "raw_tags_per_item": _summary(kept.raw_tags),
      "captions_per_item": _summary(np.array([len(c) for c in kept.captions])),
      "flags": {k: {"raw": int(v.sum()), "kept": int(kept.flags[k].sum()),
                    "kept_ids": [kept.ids[i] for i in np.flatnonzero(kept.flags[k])[:20]]}
                for k, v in table.flags.items()},
      "notes": table.notes,
      "raw_files": raw_files,
      "outputs_sha256": outputs,
      "jxhash_version": jxhash.__version__,
  }


def split_options(*, num_query: int, num_train: int, num_val: int = 500, seed: int = 0) -> list:
  """The split rules every dataset takes, with its protocol's sizes as defaults."""
  from jxhash.data.options import Option
  return [
      Option("num_query", "int", num_query, "query items (disjoint from the retrieval set)", low=1),
      Option("num_train", "int", num_train, "training items drawn from the retrieval set", low=1),
      Option("num_val", "int", num_val, "validation items for model selection (never queries)", low=0),
      Option("val_from", "str", "train", "where val comes from: the drawn training items (train shrinks by "
             "num_val) or retrieval items outside train", choices=("train", "retrieval")),
      Option("split_seed", "int", seed, "seed of the split permutation (numpy default_rng)", low=0),
      Option("missing_images", "str", "error", "an item whose image file is absent: stop with an error, or drop "
             "the item (counted in the manifest)", choices=("error", "drop")),
  ]


def image_rule(table: Table, rules: dict, keep: np.ndarray, dropped: dict, tree_hint: str = "") -> np.ndarray:
  """Apply the missing_images rule to `keep` (items otherwise kept)."""
  missing = table.flags.get("image_missing")
  if missing is None:
    return keep
  lost = keep & missing
  if lost.any():
    if rules["missing_images"] == "error":
      first = table.images[int(np.flatnonzero(lost)[0])]
      raise DataError(f"{int(lost.sum())} images of kept items are missing from the raw folder (first: {first}); "
                      "add them, or pass --rule missing_images=drop")
    dropped["image_missing"] = int(lost.sum())
  return keep & ~missing


def select_labelled(table, rules: dict, *, untagged: str, removed: np.ndarray | None = None):
  """The DCMH-lineage item rule shared by MIRFlickr and NUS-WIDE: keep items with at least one
  label, and with `keep="labelled-tagged"` also at least one vocabulary tag (the count of items
  dropped for that goes under `untagged`), then the image rule. `removed` (N,) bool: items a
  given list removes first (counted under "not_used"). (kept mask, dropped counts)."""
  labelled = table.labels.any(1)
  dropped = {}
  start = np.ones(len(table), bool)
  if removed is not None:
    start = ~removed
    dropped["not_used"] = int(removed.sum())
  keep = start & labelled
  dropped["no_label"] = int((start & ~labelled).sum())
  if rules["keep"] == "labelled-tagged":
    tagged = table.tags_per_item() > 0
    dropped[untagged] = int((keep & ~tagged).sum())
    keep &= tagged
  return image_rule(table, rules, keep, dropped), dropped
