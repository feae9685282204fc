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

import sys
import time

from jxhash import cli
from jxhash.commands import flags
from jxhash.errors import UserError


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__)
  p.add_argument("--dataset", default="synthetic")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--bits", default="32", help="comma-separated code lengths (default 32)")
  flags.add_seeds(p, default=1, help="model seeds per cell (vmapped), mean ± std")
  p.add_argument("--seed", type=cli.int_at_least(0), default=0, help="first model seed")
  p.add_argument("--split-seed", type=cli.int_at_least(0), default=0)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                 help="uchm config override applied to both variants (repeatable)")
  return p


def code_lengths(text: str) -> list[int]:
  """The --bits list: comma-separated integers >= 1."""
  try:
    bits = [int(b) for b in text.split(",")]
  except ValueError:
    raise UserError(f"--bits {text!r}: expected comma-separated integers, e.g. 16,32,64") from None
  if any(b < 1 for b in bits):
    raise UserError(f"--bits {text!r}: every code length must be >= 1")
  return bits


def run(args) -> str:
  bits_list = code_lengths(args.bits)
  from jxhash import config as config_lib, data as data_lib, metrics
  from jxhash.training import trainer
  from jxhash.methods import get_method

  spec = get_method("uchm")
  ds = data_lib.load(args.dataset, args.data_dir, seed=args.split_seed)
  chance = metrics.chance_map(ds.labels[ds.query], ds.labels[ds.retrieval])
  options = trainer.TrainOptions(seed=args.seed, num_seeds=args.seeds, eval_every=0, progress=False)
  rows = []
  for bits in bits_list:
    for similarity in ("unimodal", "mie"):
      config = config_lib.apply_overrides(spec.Config(bits=bits), args.overrides + [f"similarity={similarity}"])
      t0 = time.perf_counter()
      fit = trainer.fit(spec, config, ds, options)
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
  return cli.main(lambda a: print(run(a)), argv, parser())


if __name__ == "__main__":
  sys.exit(main())
