"""Choosing between a method's variants on a carved val split, and tabling the choice.

A study script (experiments/mmach_triplet.py, hsidhn_lab_template.py, uchm_correction.py) names
a method, its variants (name -> config overrides) and `variant_of(config) -> name`, and hands
its command line to `main`:

    python experiments/mmach_triplet.py val --variant all-batch --seeds 5 \
        --data-dir ../shared/data/wikipedia --out results/mmach_triplet/val-all-batch.json
    python experiments/mmach_triplet.py table results/mmach_triplet/val-*.json

`val`: Wikipedia has no official val split, so `--num-val` training items are held out of
training (`data.load(..., num_val=N)`), and each seed's last-epoch model ranks them against the
retrieval set without them; the test queries are never looked at. Training sees no val split,
so the trainer keeps the last epoch (no label-based selection). The record written holds the
per-seed val mAP@all of both directions.

`table`: val files of `val`, or results files of `jxhash train` (the test protocol, whose rows
are named by `variant_of` of their config), as one markdown table: mean ± std over seeds of
I→T, T→I and their mean, and the difference to the first file's variant with the std of the
per-seed paired differences (seed i of a row against seed i of the first row).

Not a `jxhash` subcommand (it needs a script's variants); bad input is one line on stderr and
exit code 2 (`jxhash.cli.main`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Callable, Mapping

from jxhash import cli
from jxhash.commands import flags
from jxhash.errors import UserError

DEFAULT_DATA_DIR = "../shared/data/wikipedia"
DIRECTIONS = ("i2t", "t2i")


def parser(*, doc: str, variants: Mapping[str, dict]) -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=doc)
  sub = p.add_subparsers(dest="command", required=True)
  v = sub.add_parser("val", help="train on the carved split, score each seed on val")
  v.add_argument("--variant", required=True, choices=sorted(variants))
  v.add_argument("--dataset", default="wikipedia", help="dataset loader name (default: wikipedia)")
  v.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                 help=f"folder with the dataset's files (default: {DEFAULT_DATA_DIR}, relative to the "
                      "current directory)")
  v.add_argument("--num-val", type=cli.int_at_least(1), default=200,
                 help="training items held out as val (default 200)")
  v.add_argument("--split-seed", type=cli.int_at_least(0), default=0, help="seed of the val carve (default 0)")
  flags.add_bits(v, default=32, help="code length (default 32)")
  flags.add_seeds(v, default=5, help="model seeds (vmapped; default 5)")
  v.add_argument("--seed", type=cli.int_at_least(0), default=0, help="first model seed (default 0)")
  v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                 help="extra config override for this run (repeatable)")
  v.add_argument("--out", required=True, help="the val record (JSON) to write")
  v.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
  t = sub.add_parser("table", help="markdown table of val files (`val`) or test files (`jxhash train`)")
  t.add_argument("files", nargs="+")
  return p


def val_run(args, *, method: str, variants: Mapping[str, dict]) -> dict:
  """Train on the train split without the val items; each seed's last model scored on val.

  `args` holds the `val` flags (variant, dataset, data_dir, num_val, split_seed, bits, seeds,
  seed, overrides). Returns the val record: per-seed val mAP@all under "val"[direction].
  """
  import numpy as np

  from jxhash import config as config_lib, data as data_lib
  from jxhash.training import evaluation
  from jxhash.training import runstate
  from jxhash.training import trainer
  from jxhash.methods import get_method

  spec = get_method(method)
  overrides = [f"{k}={v}" for k, v in variants[args.variant].items()] + list(args.overrides)
  config = config_lib.apply_overrides(spec.Config(bits=args.bits), overrides)
  carved = data_lib.load(args.dataset, args.data_dir, seed=args.split_seed, num_val=args.num_val)
  fit = trainer.fit(spec, config, dataclasses.replace(carved, val=np.zeros(0, np.int64)),
                  trainer.TrainOptions(seed=args.seed, num_seeds=args.seeds, eval_every=0, progress=False))
  scores = [evaluation.evaluate(spec, runstate.seed_slice(fit.state.model, i), carved, fit.normalizer,
                                queries="val", full=False) for i in range(args.seeds)]
  return {"kind": "val", "method": method, "variant": args.variant, "overrides": overrides,
          "config": dataclasses.asdict(config), "dataset": args.dataset, "split_sizes": carved.sizes(),
          "split_seed": args.split_seed, "seeds": list(range(args.seed, args.seed + args.seeds)),
          "val": {d: [s[d]["map"] for s in scores] for d in DIRECTIONS},
          "train_time_s": round(fit.train_time, 1)}


def per_seed(record: dict, variant_of: Callable[[dict], str]) -> tuple[str, dict]:
  """(label, {"i2t": [...], "t2i": [...]}) of a val record or a `jxhash train` results record."""
  if record.get("kind") == "val":
    return record["variant"], record["val"]
  rows = record["per_seed"]
  return variant_of(record["config"]), {d: [r[d]["map"] for r in rows] for d in DIRECTIONS}


def _read(path) -> dict:
  from jxhash import fileio
  path = fileio.require_readable_file(path, what="table file")
  try:
    record = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"table file {path}: not JSON ({e})") from e
  if not isinstance(record, dict):
    raise UserError(f"table file {path}: not a val record nor a results file (a JSON object)")
  return record


def table(files, *, variant_of: Callable[[dict], str]) -> str:
  """The markdown table of val records or `jxhash train` results files (module docstring)."""
  import numpy as np

  records = [_read(f) for f in files]
  kinds = ["val" if r.get("kind") == "val" else "test" for r in records]
  if len(set(kinds)) != 1:
    other = next(f for f, k in zip(files, kinds) if k != kinds[0])
    raise UserError(f"table: {files[0]} is a {kinds[0]} file but {other} is not; give only val files "
                    "or only test files")
  runs = []
  for i, (f, r) in enumerate(zip(files, records)):
    try:
      runs.append(per_seed(r, variant_of))
      if i == 0:  # the heading reads them
        method, bits = r["method"], r["config"]["bits"]
    except (KeyError, TypeError) as e:
      raise UserError(f"table file {f}: lacks per-seed scores, the method or the config (missing {e}); "
                      "give val files of this script or results files of `jxhash train --seeds N`") from e
  seeds = {len(v["i2t"]) for _, v in runs}
  base_name, base = runs[0]
  lines = [f"{kinds[0]} mAP@all, {method}, {records[0].get('dataset')}, {bits} bits, "
           f"{'/'.join(map(str, sorted(seeds)))} seeds (mean ± std over seeds); Δ = difference to {base_name} "
           "(± std of the per-seed paired differences)", "",
           "| variant | I→T | T→I | mean | Δ I→T | Δ T→I | Δ mean |", "|---|---|---|---|---|---|---|"]
  b = {d: np.asarray(base[d]) for d in DIRECTIONS}
  b["mean"] = (b["i2t"] + b["t2i"]) / 2
  for name, v in runs:
    x = {d: np.asarray(v[d]) for d in DIRECTIONS}
    x["mean"] = (x["i2t"] + x["t2i"]) / 2
    cells = [f"{x[d].mean():.4f} ± {x[d].std():.4f}" for d in ("i2t", "t2i", "mean")]
    if len(x["i2t"]) == len(b["i2t"]):
      cells += [f"{(x[d] - b[d]).mean():+.4f} ± {(x[d] - b[d]).std():.4f}" for d in ("i2t", "t2i", "mean")]
    else:  # unpaired seeds: no paired difference
      cells += ["—"] * 3
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None, *, doc: str, method: str, variants: Mapping[str, dict],
         variant_of: Callable[[dict], str]) -> int:
  """A study script's command line (`val` or `table`); the exit code (module docstring)."""

  def run(args):
    if args.command == "table":
      print(table(args.files, variant_of=variant_of))
      return
    from jxhash import fileio
    out = fileio.require_writable_file(args.out, what="--out")
    if (out.exists() or pathlib.Path(args.out).is_symlink()) and not args.overwrite:
      raise UserError(f"--out {out} exists; choose another path or pass --overwrite")
    t0 = time.perf_counter()
    record = val_run(args, method=method, variants=variants)
    fileio.atomic_write_json(out, record, what="--out", indent=1)
    print(f"{args.variant}: val i2t {record['val']['i2t']} t2i {record['val']['t2i']} "
          f"({time.perf_counter() - t0:.0f} s) -> {out}")

  return cli.main(run, argv, parser(doc=doc, variants=variants))
