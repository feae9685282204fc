"""Encode items into a searchable hash index with a checkpoint, and search it.

    # text side of Wikipedia's retrieval set -> index
    python experiments/index.py build --checkpoint checkpoints/dcmh/wikipedia/32bits \
        --dataset wikipedia --data-dir ../shared/data/wikipedia --split retrieval --modality text \
        --out wiki-text.npz
    # image queries against it: top 10 ids and Hamming distances (or --json)
    python experiments/index.py search --index wiki-text.npz --dataset wikipedia \
        --data-dir ../shared/data/wikipedia --split query --modality image --k 10 --limit 3

Items can also come from a features file (`--features feats.npy` or `file.mat:key`, with
optional `--ids ids.npy`). Search encodes its queries with the checkpoint recorded in the
index unless `--checkpoint` names another; queries should be of the other modality than the
indexed items for cross-modal retrieval. User errors: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _items(args):
  """(raw features, ids) of the items named by --features or --dataset/--split."""
  from jxhash import data as data_lib
  from jxhash.data import io
  from jxhash.errors import UserError

  if args.features:
    x = io.read_array(*io.split_spec(args.features))
    ids = io.read_array(*io.split_spec(args.ids)).astype(np.int64).ravel() if args.ids else None
    return x, ids
  if not args.dataset:
    raise UserError("name the items: --features FILE, or --dataset (with --data-dir and --split)")
  ds = data_lib.load(args.dataset, args.data_dir, seed=args.split_seed)
  idx = getattr(ds, args.split)
  return getattr(ds, args.modality)[idx], idx


def build(args) -> dict:
  from jxhash import checkpoint
  from jxhash.errors import UserError
  from jxhash.index import HashIndex
  if not args.checkpoint:
    raise UserError("build needs --checkpoint")
  enc = checkpoint.restore(args.checkpoint, seed=args.seed)
  x, ids = _items(args)
  index = HashIndex(enc.bits, metadata={"method": enc.method, "checkpoint": str(pathlib.Path(args.checkpoint).resolve()),
                                        "modality": args.modality, "seed": args.seed,
                                        "source": args.features or f"{args.dataset}:{args.split}"})
  for start in range(0, x.shape[0], args.batch):
    part_ids = None if ids is None else ids[start:start + args.batch]
    index.add(enc.encode(args.modality, x[start:start + args.batch]), ids=part_ids)
  path = index.save(args.out)
  print(f"indexed {len(index)} {args.modality} items at {enc.bits} bits ({index.nbytes} bytes of codes) -> {path}")
  return {"path": str(path), "size": len(index)}


def search(args) -> dict:
  from jxhash import checkpoint
  from jxhash.errors import UserError
  from jxhash.index import HashIndex
  index = HashIndex.load(args.index)
  ck = args.checkpoint or index.metadata.get("checkpoint")
  if not ck:
    raise UserError(f"{args.index} records no checkpoint; pass --checkpoint")
  enc = checkpoint.restore(ck, seed=index.metadata.get("seed", 0) if args.checkpoint is None else args.seed)
  if enc.bits != index.bits:
    raise UserError(f"checkpoint {ck} makes {enc.bits}-bit codes but {args.index} holds {index.bits}-bit codes")
  x, qids = _items(args)
  if args.limit:
    x = x[:args.limit]
    qids = None if qids is None else qids[:args.limit]
  ids, dist = index.search(enc.encode(args.modality, x), args.k)
  qids = np.arange(x.shape[0]) if qids is None else qids
  out = {"k": args.k, "results": [{"query": int(q), "ids": i.tolist(), "distances": d.tolist()}
                                  for q, i, d in zip(qids, ids, dist)]}
  if args.json:
    print(json.dumps(out))
  else:
    for r in out["results"]:
      pairs = " ".join(f"{i}:{d}" for i, d in zip(r["ids"], r["distances"]))
      print(f"query {r['query']}: {pairs}")
  return out


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  for name in ("build", "search"):
    s = sub.add_parser(name)
    s.add_argument("--checkpoint", default=None, help="run directory or checkpoint (build: required)")
    s.add_argument("--seed", type=int, default=0, help="seed index of a multi-seed checkpoint")
    s.add_argument("--features", default=None, help="items from a features file (path or path:key)")
    s.add_argument("--ids", default=None, help="int ids of the --features rows (path or path:key)")
    s.add_argument("--dataset", default=None)
    s.add_argument("--data-dir", default=None)
    s.add_argument("--split", default="retrieval" if name == "build" else "query",
                   choices=("query", "retrieval", "train", "val"))
    s.add_argument("--split-seed", type=int, default=0)
    s.add_argument("--modality", required=True, choices=("image", "text"))
    if name == "build":
      s.add_argument("--out", required=True, help="index file (.npz) or folder")
      s.add_argument("--batch", type=int, default=65536, help="items encoded per batch")
    else:
      s.add_argument("--index", required=True)
      s.add_argument("--k", type=int, default=10)
      s.add_argument("--limit", type=int, default=0, help="only the first N queries")
      s.add_argument("--json", action="store_true")
  return p.parse_args(argv)


def main(argv=None) -> int:
  sys.path.insert(0, str(ROOT))
  args = parse_args(argv)
  from jxhash.errors import exit_code
  return exit_code(build if args.command == "build" else search, args)


if __name__ == "__main__":
  sys.exit(main())
