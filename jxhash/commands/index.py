"""Encode items into a searchable hash index with a checkpoint, search it, convert it.

    # text side of Wikipedia's retrieval set -> index
    jxhash index build --checkpoint checkpoints/dcmh-wiki \
        --dataset wikipedia --data-dir ../shared/data/wikipedia --split retrieval --modality text \
        --out wiki-text.npz
    # image queries against it: each line "query <id>: <item id>:<distance> ..." (or --json)
    jxhash index search --index wiki-text.npz --dataset wikipedia \
        --data-dir ../shared/data/wikipedia --split query --modality image --k 10 --limit 3
    # the same index as a FAISS binary index file (faiss.read_index_binary loads it), and back
    jxhash index convert --index wiki-text.npz --out wiki-text.faissindex --format faiss

Items can also come from a features file (`--features feats.npy` or `file.mat:key`, an (N, D)
array, with optional `--ids ids.npy`: N integer ids; whole-number floats such as MATLAB's
doubles are taken exactly, anything else -- 1.5, NaN -- is refused, never truncated). Search
encodes its queries with the checkpoint recorded in the index unless `--checkpoint` names
another (a FAISS file records none); queries should be of the other modality than the indexed
items for cross-modal retrieval.

Engines (`search --engine`), all exact with ties in insertion order, so all print the same:
  flat   compiled exhaustive scan (default; beats FAISS's IndexBinaryFlat, benchmarks/INDEX.md)
  mih    multi-index hashing: sublinear where near neighbours are close (trained codes)
  faiss  FAISS's IndexBinaryFlat plus a range search to order ties (needs faiss-cpu)

Formats (`build --format`, `convert --format`): "jxhash" (.npz with ids and metadata) or
"faiss" (IndexBinaryFlat, or IndexBinaryIDMap when ids are not 0..N-1; codes of a multiple of
8 bits; metadata dropped). `--index` reads either.

Paths may be relative, `./`, `~` or symlinks; outputs are checked writable before anything is
encoded, and `--out` must name a file that does not exist yet (`--overwrite` replaces one) and is
not a symbolic link (never followed, even with `--overwrite`); the file is written atomically.
Features with NaN or inf values, or of another width than the checkpoint's, are refused (the
width from the file's header, before it is read). User errors: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np



def _resolve_inputs(args) -> None:
  """Resolves every user path once (fileio.resolve); input files must exist."""
  from jxhash import fileio
  from jxhash.data import io
  if args.features:
    path, key = io.split_spec(args.features)
    args.features = (fileio.require_readable_file(path, what="--features file"), key)
  if args.ids:
    if not args.features:
      from jxhash.errors import UserError
      raise UserError("--ids goes with --features (dataset items carry their own ids)")
    path, key = io.split_spec(args.ids)
    args.ids = (fileio.require_readable_file(path, what="--ids file"), key)
  if args.data_dir:
    args.data_dir = fileio.resolve(args.data_dir)
  if args.checkpoint:
    args.checkpoint = fileio.resolve(args.checkpoint)


def _spec_text(spec) -> str:
  return f"{spec[0]}:{spec[1]}" if spec[1] else str(spec[0])


def checked_ids(raw: np.ndarray, rows: int, where: str) -> np.ndarray:
  """(N,) int64 ids from a user array: integers, or whole-number floats taken exactly."""
  from jxhash.errors import UserError
  ids = np.asarray(raw)
  if ids.ndim == 2 and 1 in ids.shape:  # MATLAB column or row vectors
    ids = ids.reshape(-1)
  if ids.ndim != 1:
    raise UserError(f"{where} holds an array of shape {ids.shape}; expected (N,) ids")
  if ids.shape[0] != rows:
    raise UserError(f"{where} holds {ids.shape[0]} ids for {rows} items")
  if ids.dtype.kind == "f":
    whole = np.isfinite(ids) & (np.abs(ids) <= 2.0**53)
    whole[whole] = ids[whole] == np.round(ids[whole])
    if not whole.all():
      i = int(np.flatnonzero(~whole)[0])
      raise UserError(f"{where}: id {float(ids[i])!r} at row {i} is not a whole number; ids must be integers")
    ids = ids.astype(np.int64)
  elif ids.dtype.kind == "u":
    if ids.size and ids.max() > np.iinfo(np.int64).max:
      raise UserError(f"{where}: id {int(ids.max())} does not fit in int64")
    ids = ids.astype(np.int64)
  elif ids.dtype.kind != "i":
    raise UserError(f"{where} holds {ids.dtype} values; ids must be integers")
  ids = ids.astype(np.int64, copy=False)
  sorted_ids = np.sort(ids)
  repeated = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
  if repeated.size:
    raise UserError(f"{where}: id {int(repeated[0])} appears more than once; ids must be unique")
  return ids


def _declared_features(args) -> tuple:
  """(declared shape of --features, its checked ids or None), or (None, None) without it.

  The shape comes from the file's header: (N, D). The ids (small) are read and checked against
  N. All before the checkpoint is restored or the features are read."""
  from jxhash.data import io
  from jxhash.errors import UserError
  if not args.features:
    return None, None
  shape = tuple(io.declare(*args.features).shape)
  if len(shape) != 2:
    raise UserError(f"--features file {_spec_text(args.features)} holds an array of shape {shape}; expected (N, D): "
                    "one row of features per item")
  ids = checked_ids(io.read_array(*args.ids), shape[0], f"--ids file {_spec_text(args.ids)}") if args.ids else None
  return shape, ids


def _items(args, enc, declared: tuple):
  """(raw features, ids or None) of the items named by --features or --dataset/--split, for the
  encoder `enc`. A features file's `declared` shape is checked against the encoder's input width
  before it is read, and its values (numeric, finite) once read."""
  from jxhash import data as data_lib
  from jxhash.array_inputs import feature_rows
  from jxhash.data import io
  from jxhash.errors import UserError
  if args.features:
    shape, ids = declared
    where = f"--features file {_spec_text(args.features)}"
    trailing = enc.input_shape(args.modality)
    if shape[1:] != trailing:
      raise UserError(f"{where} holds features of width {shape[1]}; the checkpoint encodes {args.modality} "
                      f"inputs of shape (N, {', '.join(map(str, trailing))})")
    return feature_rows(io.read_array(*args.features), where, trailing=trailing, lazy_ok=False), ids
  if not args.dataset:
    raise UserError("name the items: --features FILE, or --dataset (with --data-dir and --split)")
  ds = data_lib.load(args.dataset, args.data_dir, seed=args.split_seed)
  idx = getattr(ds, args.split)
  return getattr(ds, args.modality)[idx], idx


def build(args) -> dict:
  from jxhash import checkpoint, fileio
  from jxhash.errors import UserError
  from jxhash.index import HashIndex
  if not args.checkpoint:
    raise UserError("build needs --checkpoint")
  out = fileio.require_new_output(args.out, what="--out", overwrite=args.overwrite)
  _resolve_inputs(args)
  declared = _declared_features(args)
  enc = checkpoint.restore(args.checkpoint, seed=args.seed)
  x, ids = _items(args, enc, declared)
  if args.format == "faiss" and enc.bits % 8:
    raise UserError(f"--format faiss needs a multiple of 8 bits; {args.checkpoint} makes {enc.bits}-bit codes")
  source = _spec_text(args.features) if args.features else f"{args.dataset}:{args.split}"
  index = HashIndex(enc.bits, metadata={"method": enc.method, "checkpoint": str(args.checkpoint),
                                        "modality": args.modality, "seed": args.seed, "source": source})
  for start in range(0, x.shape[0], args.batch):
    part_ids = None if ids is None else ids[start:start + args.batch]
    index.add(enc.encode(args.modality, x[start:start + args.batch]), ids=part_ids)
  path = index.save(out, format=args.format)
  print(f"indexed {len(index)} {args.modality} items at {enc.bits} bits ({index.nbytes} bytes of codes) -> {path}")
  return {"path": str(path), "size": len(index)}


def search(args) -> dict:
  from jxhash import checkpoint, fileio
  from jxhash.errors import UserError
  from jxhash.index import HashIndex
  _resolve_inputs(args)
  declared = _declared_features(args)
  index_path = fileio.resolve(args.index)
  index = HashIndex.load(index_path)
  if args.engine == "faiss":
    from jxhash.index import faiss_io
    faiss_io._faiss()  # fail now, not after encoding, when faiss is missing
  ck = args.checkpoint or index.metadata.get("checkpoint")
  if not ck:
    raise UserError(f"{index_path} records no checkpoint; pass --checkpoint")
  enc = checkpoint.restore(ck, seed=index.metadata.get("seed", 0) if args.checkpoint is None else args.seed)
  if enc.bits != index.bits:
    raise UserError(f"checkpoint {ck} makes {enc.bits}-bit codes but {index_path} holds {index.bits}-bit codes")
  x, qids = _items(args, enc, declared)
  if args.limit:
    x = x[:args.limit]
    qids = None if qids is None else qids[:args.limit]
  ids, dist = index.search(enc.encode(args.modality, x), args.k, engine=args.engine)
  qids = np.arange(x.shape[0]) if qids is None else qids
  out = {"k": args.k, "engine": args.engine,
         "results": [{"query": int(q), "ids": i.tolist(), "distances": d.tolist()} for q, i, d in zip(qids, ids, dist)]}
  if args.json:
    print(json.dumps(out))
  else:
    print(f"# each line: query <query id>: <item id>:<Hamming distance> ... -- the {args.k} nearest indexed items, "
          "nearest first, ties in insertion order (--json for a JSON object)")
    for r in out["results"]:
      pairs = " ".join(f"{i}:{d}" for i, d in zip(r["ids"], r["distances"]))
      print(f"query {r['query']}: {pairs}")
  return out


def convert(args) -> dict:
  from jxhash import fileio
  from jxhash.index import HashIndex
  out = fileio.require_new_output(args.out, what="--out", overwrite=args.overwrite)
  index = HashIndex.load(fileio.resolve(args.index))
  path = index.save(out, format=args.format)
  print(f"wrote {len(index)} codes of {index.bits} bits as a {args.format} index -> {path}")
  return {"path": str(path), "size": len(index)}


def parse_args(argv):
  from jxhash.cli import ArgumentParser, int_at_least
  p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  formats = ("jxhash", "faiss")
  for name in ("build", "search"):
    s = sub.add_parser(name)
    s.add_argument("--checkpoint", default=None, help="run directory or checkpoint (build: required)")
    s.add_argument("--seed", type=int_at_least(0), default=0, help="seed index of a multi-seed checkpoint")
    s.add_argument("--features", default=None, help="items from an (N, D) features file (path or path:key)")
    s.add_argument("--ids", default=None, help="integer ids of the --features rows (path or path:key)")
    s.add_argument("--dataset", default=None)
    s.add_argument("--data-dir", default=None)
    s.add_argument("--split", default="retrieval" if name == "build" else "query",
                   choices=("query", "retrieval", "train", "val"))
    s.add_argument("--split-seed", type=int_at_least(0), default=0)
    s.add_argument("--modality", required=True, choices=("image", "text"))
    if name == "build":
      s.add_argument("--out", required=True, help="index file to write")
      s.add_argument("--format", default="jxhash", choices=formats, help="index file format (default jxhash)")
      s.add_argument("--batch", type=int_at_least(1), default=65536, help="items encoded per batch")
      s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    else:
      s.add_argument("--index", required=True, help="index file (jxhash .npz or FAISS binary index)")
      s.add_argument("--engine", default="flat", choices=("flat", "mih", "faiss"), help="search engine (default flat)")
      s.add_argument("--k", type=int_at_least(1), default=10, help="neighbours per query (default 10)")
      s.add_argument("--limit", type=int_at_least(1), default=None, help="only the first N queries")
      s.add_argument("--json", action="store_true")
  c = sub.add_parser("convert", help="rewrite an index in another format")
  c.add_argument("--index", required=True, help="index file (jxhash .npz or FAISS binary index)")
  c.add_argument("--out", required=True, help="index file to write")
  c.add_argument("--format", required=True, choices=formats)
  c.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
  return p.parse_args(argv)


class _Parser:
  def parse_args(self, argv):
    return parse_args(argv)


def main(argv=None) -> int:
  from jxhash import cli
  return cli.main(lambda args: {"build": build, "search": search, "convert": convert}[args.command](args), argv,
                  _Parser())


if __name__ == "__main__":
  sys.exit(main())
