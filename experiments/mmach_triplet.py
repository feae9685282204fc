"""MMACH triplet forms: choose the default on a carved val split, then compare on the test protocol.

Variants (`--variant`), every other setting at the MMACH defaults:
  graded-random  triplet=graded, triplet_targets=random (the default before this study)
  graded-batch   triplet=graded, triplet_targets=batch
  all-batch      triplet=all,    triplet_targets=batch  (SAALDH's all-triplets, margin 0.3)
  hard-batch     triplet=hard,   triplet_targets=batch  (SAALDH's batch-hard, margin 0.3)
  all-random     triplet=all,    triplet_targets=random
  hard-random    triplet=hard,   triplet_targets=random
  none           triplet_weight=0 (no triplet term; a reference)

1. Selection, on val only (Wikipedia has no official val split: `num_val` training items are
   held out of training, and each seed's last-epoch model ranks them against the retrieval set
   without them; the test queries are never looked at):

     python experiments/mmach_triplet.py val --variant all-batch --seeds 5 \
         --out results/mmach_triplet/val-all-batch.json

2. Test protocol (official split, no val carve, last epoch) of the old and the chosen default,
   through the ordinary CLI:

     python experiments/run.py --method=mmach --dataset=wikipedia --data-dir=../shared/data/wikipedia \
         --bits=32 --seeds 5 --set triplet=all --set triplet_targets=batch --no-checkpoint --no-progress \
         --out results/mmach_triplet/test-all-batch.json

3. The tables of docs/mmach_triplet.md (mean ± std over seeds, differences to the first file's
   variant with the std of the per-seed paired differences):

     python experiments/mmach_triplet.py table results/mmach_triplet/val-*.json
     python experiments/mmach_triplet.py table results/mmach_triplet/test-*.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
METHOD = "mmach"
VARIANTS = {
    "graded-random": {"triplet": "graded", "triplet_targets": "random"},
    "graded-batch": {"triplet": "graded", "triplet_targets": "batch"},
    "all-batch": {"triplet": "all", "triplet_targets": "batch"},
    "hard-batch": {"triplet": "hard", "triplet_targets": "batch"},
    "all-random": {"triplet": "all", "triplet_targets": "random"},
    "hard-random": {"triplet": "hard", "triplet_targets": "random"},
    "none": {"triplet_weight": 0.0},
}


def parse_args(argv, *, doc=__doc__, variants=VARIANTS):
  p = argparse.ArgumentParser(description=doc.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  v = sub.add_parser("val", help="train on the carved split, score each seed on val")
  v.add_argument("--variant", required=True, choices=sorted(variants))
  v.add_argument("--dataset", default="wikipedia")
  v.add_argument("--data-dir", default=str(ROOT / ".." / "shared" / "data" / "wikipedia"))
  v.add_argument("--num-val", type=int, default=200, help="training items held out as val")
  v.add_argument("--split-seed", type=int, default=0, help="seed of the val carve")
  v.add_argument("--bits", type=int, default=32)
  v.add_argument("--seeds", type=int, default=5, help="model seeds (vmapped)")
  v.add_argument("--seed", type=int, default=0, help="first model seed")
  v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                 help="extra config override for this run (repeatable)")
  v.add_argument("--out", required=True)
  t = sub.add_parser("table", help="markdown table of val files (this script) or test files (run.py)")
  t.add_argument("files", nargs="+")
  return p.parse_args(argv)


def val_run(args, *, method=METHOD, variants=VARIANTS) -> dict:
  """Train on the train split without the val items; each seed's last model scored on val."""
  import numpy as np

  from jxhash import config as config_lib, data as data_lib, evaluation, runstate, train
  from jxhash.methods import get_method

  spec = get_method(method)
  overrides = [f"{k}={v}" for k, v in variants[args.variant].items()] + args.overrides
  config = config_lib.apply_overrides(spec.Config(bits=args.bits), overrides)
  carved = data_lib.load(args.dataset, args.data_dir, seed=args.split_seed, num_val=args.num_val)
  # training sees no val split, so the trainer keeps the last epoch (no label-based selection)
  fit = train.fit(spec, config, dataclasses.replace(carved, val=np.zeros(0, np.int64)),
                  train.TrainOptions(seed=args.seed, num_seeds=args.seeds, eval_every=0, progress=False))
  scores = [evaluation.evaluate(spec, runstate.seed_slice(fit.state.model, i), carved, fit.normalizer,
                                queries="val", full=False) for i in range(args.seeds)]
  return {"kind": "val", "method": method, "variant": args.variant, "overrides": overrides,
          "config": dataclasses.asdict(config), "dataset": args.dataset, "split_sizes": carved.sizes(),
          "split_seed": args.split_seed, "seeds": list(range(args.seed, args.seed + args.seeds)),
          "val": {d: [s[d]["map"] for s in scores] for d in ("i2t", "t2i")},
          "train_time_s": round(fit.train_time, 1)}


def variant_of(config: dict) -> str:
  """The VARIANTS name whose settings a results file's config has (else "other"); a config
  without the triplet fields predates them and ran graded-random."""
  if config.get("triplet_weight", 1.0) == 0.0:
    return "none"
  config = {"triplet": "graded", "triplet_targets": "random", **config}
  for name, settings in VARIANTS.items():
    if name != "none" and all(config[k] == v for k, v in settings.items()):
      return name
  return "other"


def per_seed(record: dict, variant_of=variant_of) -> tuple[str, dict]:
  """(label, {"i2t": [...], "t2i": [...]}) of a val file or a run.py results file."""
  if record.get("kind") == "val":
    return record["variant"], record["val"]
  rows = record["per_seed"]
  return variant_of(record["config"]), {d: [r[d]["map"] for r in rows] for d in ("i2t", "t2i")}


def table(files, *, variant_of=variant_of) -> str:
  import numpy as np

  records = [json.loads(pathlib.Path(f).read_text()) for f in files]
  kind = {"val" if r.get("kind") == "val" else "test" for r in records}
  if len(kind) != 1:
    raise SystemExit("error: give only val files or only test files")
  runs = [per_seed(r, variant_of) for r in records]
  seeds = {len(v["i2t"]) for _, v in runs}
  base_name, base = runs[0]
  lines = [f"{kind.pop()} mAP@all, {records[0]['method']}, {records[0].get('dataset')}, {records[0]['config']['bits']} bits, "
           f"{'/'.join(map(str, sorted(seeds)))} seeds (mean ± std over seeds); Δ = difference to {base_name} "
           "(± std of the per-seed paired differences)", "",
           "| variant | I→T | T→I | mean | Δ I→T | Δ T→I | Δ mean |", "|---|---|---|---|---|---|---|"]
  for name, v in runs:
    x = {d: np.asarray(v[d]) for d in ("i2t", "t2i")}
    x["mean"] = (x["i2t"] + x["t2i"]) / 2
    b = {d: np.asarray(base[d]) for d in ("i2t", "t2i")}
    b["mean"] = (b["i2t"] + b["t2i"]) / 2
    cells = [f"{x[d].mean():.4f} ± {x[d].std():.4f}" for d in ("i2t", "t2i", "mean")]
    if len(x["i2t"]) == len(b["i2t"]):
      cells += [f"{(x[d] - b[d]).mean():+.4f} ± {(x[d] - b[d]).std():.4f}" for d in ("i2t", "t2i", "mean")]
    else:
      cells += ["—"] * 3
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None, *, doc=__doc__, method=METHOD, variants=VARIANTS, variant_of=variant_of) -> int:
  """The command line; experiments/uchm_correction.py reuses it with its own variants."""
  sys.path.insert(0, str(ROOT))
  args = parse_args(argv, doc=doc, variants=variants)
  if args.command == "table":
    print(table(args.files, variant_of=variant_of))
    return 0
  from jxhash.errors import exit_code

  def run(a):
    t0 = time.perf_counter()
    record = val_run(a, method=method, variants=variants)
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{a.variant}: val i2t {record['val']['i2t']} t2i {record['val']['t2i']} "
          f"({time.perf_counter() - t0:.0f} s) -> {out}")

  return exit_code(run, args)


if __name__ == "__main__":
  sys.exit(main())
