"""UCHM ablation: the MIE similarity generator vs the plain unimodal mix it is trained on.

Both variants train the same hashing nets for the same epochs on the same data, split and
model seeds; "unimodal" supervises them with t = clip(mu (w cos x + (1 - w) cos y), -1, 1),
"mie" with cos(e_i, e_j) of the generator fitted to t (plus its mie_epochs of pre-training).
No label reaches training, and model selection is off (the last epoch is evaluated), so the
labels are used only for the mAPs printed. Prints a markdown table.

    python experiments/uchm_ablation.py                                   # synthetic, 32 bits
    python experiments/uchm_ablation.py --dataset=wikipedia --data-dir=../shared/data/wikipedia \
        --bits=16,32,64 --seeds=3
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dataset", default="synthetic")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--bits", default="32", help="comma-separated code lengths (default 32)")
  p.add_argument("--seeds", type=int, default=1, help="model seeds per cell (vmapped), mean ± std")
  p.add_argument("--seed", type=int, default=0, help="first model seed")
  p.add_argument("--split-seed", type=int, default=0)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                 help="uchm config override applied to both variants (repeatable)")
  return p.parse_args(argv)


def run(args) -> str:
  from jxhash import config as config_lib, data as data_lib, metrics, train
  from jxhash.methods import get_method

  spec = get_method("uchm")
  ds = data_lib.load(args.dataset, args.data_dir, seed=args.split_seed)
  chance = metrics.chance_map(ds.labels[ds.query], ds.labels[ds.retrieval])
  options = train.TrainOptions(seed=args.seed, num_seeds=args.seeds, eval_every=0, progress=False)
  rows = []
  for bits in [int(b) for b in args.bits.split(",")]:
    for similarity in ("unimodal", "mie"):
      config = config_lib.apply_overrides(spec.Config(bits=bits), args.overrides + [f"similarity={similarity}"])
      t0 = time.perf_counter()
      fit = train.fit(spec, config, ds, options)
      cells = []
      for d in ("i2t", "t2i"):
        cell = f"{fit.final[d]['map']:.4f}"
        if args.seeds > 1:
          cell += f" ± {fit.final[d]['map_std']:.4f}"
        cells.append(cell)
      rows.append(f"| {similarity} | {bits} | {cells[0]} | {cells[1]} | {time.perf_counter() - t0:.0f} |")
      print(rows[-1], file=sys.stderr, flush=True)
  head = (f"{ds.name}: splits {ds.sizes()}, chance mAP {chance:.4f}; {args.seeds} seed(s) from {args.seed}; "
          f"overrides {args.overrides or 'none'}\n\n"
          "| similarity | bits | I→T mAP@all | T→I mAP@all | seconds |\n|---|---|---|---|---|")
  return "\n".join([head] + rows)


def main(argv=None) -> int:
  sys.path.insert(0, str(ROOT))
  args = parse_args(argv)
  from jxhash.errors import exit_code
  return exit_code(lambda a: print(run(a)), args)


if __name__ == "__main__":
  sys.exit(main())
