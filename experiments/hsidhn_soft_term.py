"""HSIDHN ablation: what the soft (partial-overlap) term of the dual similarity does.

Trains HSIDHN on multi-label synthetic data (items carry 1..max_labels of 10 labels, so most
relevant pairs only partly overlap) with every variant of the pair loss, same data split,
same model seeds and same budget, and prints one markdown table of mAP@all and normalised
weighted mAP@all (gain = number of shared labels) in both directions:

    python experiments/hsidhn_soft_term.py                      # the run in docs/hsidhn_soft_term.md
    python experiments/hsidhn_soft_term.py --epochs 20 --seeds 1  # a quick look

Variants:
  hard-all   soft_term=False, soft_off="hard": every pair gets the likelihood with
             S = 1[share a label] (the DCMH objective on the HSIDHN network)
  hard-only  soft_term=False, soft_off="drop": partial-overlap pairs get no loss
  dual       soft_term=True: partial-overlap pairs regress a code similarity onto cos(l_i, l_j)
             (HSIDHN's dual similarity as reconstructed in jxhash), for each --dual entry
             weight:similarity, similarity "affine" = (f.g/K + 1)/2 (the default) or
             "inner" = f.g/K
"""

from __future__ import annotations

import sys
import time

from jxhash import cli
from jxhash.commands import flags
from jxhash.errors import UserError


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__)
  flags.add_bits(p, default=32, help="code length (default 32)")
  p.add_argument("--epochs", type=cli.int_at_least(1), default=100)
  flags.add_seeds(p, default=2, help="model seeds per variant (vmapped)")
  p.add_argument("--seed", type=cli.int_at_least(0), default=0, help="first model seed")
  p.add_argument("--max-labels", type=cli.int_at_least(1), default=4, help="most labels per synthetic item")
  p.add_argument("--dual", default="1:affine,0.25:affine,4:affine,1:inner",
                 help="comma-separated soft_weight:code_similarity entries, one 'dual' row each")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                 help="extra HSIDHN config override for every variant (repeatable)")
  return p


def pair_fractions(labels) -> dict:
  """Fractions of training pairs that are disjoint, identical and partly overlapping."""
  import numpy as np

  x = labels.astype(np.float64)
  shared = x @ x.T
  count = x.sum(1)
  identical = (shared == count[:, None]) & (shared == count[None, :])
  disjoint = shared == 0
  return {"disjoint": float(disjoint.mean()), "identical": float(identical.mean()),
          "partial": float((~disjoint & ~identical).mean())}


def dual_variants(text: str) -> list[tuple[str, dict]]:
  """The 'dual' rows of --dual: (name, config changes) per weight:similarity entry."""
  variants = []
  for entry in (v.strip() for v in text.split(",") if v.strip()):
    weight, _, similarity = entry.partition(":")
    similarity = similarity or "affine"
    try:
      weight = float(weight)
    except ValueError:
      raise UserError(f"--dual entry {entry!r}: the weight {weight!r} is not a number") from None
    variants.append((f"dual, {similarity}, soft_weight={weight:g}",
                     {"soft_term": True, "soft_weight": weight, "code_similarity": similarity}))
  return variants


def run(args) -> None:
  import numpy as np

  from jxhash import config as config_lib, data, metrics
  from jxhash.training import evaluation
  from jxhash.training import runstate
  from jxhash.training import trainer
  from jxhash.methods import get_method

  spec = get_method("hsidhn")
  ds = data.load("synthetic", max_labels=args.max_labels)
  base = config_lib.apply_overrides(spec.Config(bits=args.bits, epochs=args.epochs), args.overrides)
  variants = [("hard-all", {"soft_term": False, "soft_off": "hard"}),
              ("hard-only", {"soft_term": False, "soft_off": "drop"})] + dual_variants(args.dual)

  fractions = pair_fractions(ds.labels[ds.train])
  chance = metrics.chance_map(ds.labels[ds.query], ds.labels[ds.retrieval])
  print(f"synthetic: max_labels={args.max_labels}, splits {ds.sizes()}, training pairs "
        + ", ".join(f"{k} {v:.3f}" for k, v in fractions.items()) + f"; chance mAP {chance:.3f}")
  print(f"hsidhn: bits={args.bits}, epochs={args.epochs}, model seeds {args.seed}..{args.seed + args.seeds - 1}, "
        f"overrides {args.overrides or 'none'}\n")

  rows = []
  for name, change in variants:
    config = config_lib.apply_overrides(base, [f"{k}={v}" for k, v in change.items()])
    t0 = time.perf_counter()
    fit = trainer.fit(spec, config, ds, trainer.TrainOptions(seed=args.seed, num_seeds=args.seeds, progress=False))
    scores = {}
    for i in range(args.seeds):
      result = evaluation.evaluate(spec, runstate.seed_slice(fit.state.model, i), ds, fit.normalizer, nwmap=True)
      for direction, r in result.items():
        scores.setdefault(f"map_{direction}", []).append(r["map"])
        scores.setdefault(f"nwmap_{direction}", []).append(r["nwmap"])
    rows.append((name, scores, time.perf_counter() - t0))

  def cell(v):
    return f"{np.mean(v):.4f} ± {np.std(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"

  cols = ("map_i2t", "map_t2i", "nwmap_i2t", "nwmap_t2i")
  print("| variant | mAP I→T | mAP T→I | NWmAP I→T | NWmAP T→I | time (s) |")
  print("|---|---|---|---|---|---|")
  for name, scores, seconds in rows:
    print(f"| {name} | " + " | ".join(cell(scores[c]) for c in cols) + f" | {seconds:.0f} |")
  if args.seeds > 1:
    print(f"\nmean ± std over {args.seeds} model seeds (same data split and batch order per seed).")


def main(argv=None) -> int:
  return cli.main(run, argv, parser())


if __name__ == "__main__":
  sys.exit(main())
