"""HSIDHN: the first reconstruction (the default) against the SCAHN/SAALDH lab template.

Variants (`--variant`), every other setting at the HSIDHN defaults:
  default          multi-scale MLP, DCMH's loss with the dual similarity, lr 0.3 linear, clip 1
  default-nobbi    the same with bbi=false
  lab              `--preset lab`: layer-wise network, per-layer inter/intra/pair likelihood with
                   theta = <h, o>/(K/32), SGD 10^-1.1 decayed geometrically, no clipping
  lab-nobbi        the same with bbi=false
  lab-clip         the lab template with the defaults' optimiser (lr 0.3 linear, clip 1)
  lab-loss         the lab's loss (objective=scahn, theta_divisor=K/32) on the default network
                   with the default optimiser
  default-nosoft, lab-nosoft
                   soft_term=false (on single-label data such as Wikipedia every pair is hard and
                   these equal their parents; tests/test_hsidhn.py checks the losses agree)

The commands mirror experiments/mmach_triplet.py (both run jxhash.commands.ablation): selection on
a carved val split, each seed's last-epoch model scored on val (the test queries are never
looked at):

    python experiments/hsidhn_lab_template.py val --variant lab --seeds 5 \
        --out results/hsidhn_lab/val-lab.json

the test protocol through the ordinary CLI (no val split, so the last epoch is evaluated):

    python experiments/run.py --method=hsidhn --dataset=wikipedia --data-dir=../shared/data/wikipedia \
        --bits=32 --seeds 5 --preset lab --no-checkpoint --no-progress --out results/hsidhn_lab/test-lab.json

and the tables of docs/hsidhn_lab_template.md:

    python experiments/hsidhn_lab_template.py table results/hsidhn_lab/val-*.json
"""

from __future__ import annotations

import sys

from jxhash.commands import ablation
from jxhash.methods import hsidhn

LAB_OPTIMISER = ("lr", "lr_end", "lr_schedule", "clip_norm")
LAB = hsidhn.SPEC.presets["lab"]  # `--preset lab`
VARIANTS = {
    "default": {},
    "default-nobbi": {"bbi": False},
    "default-nosoft": {"soft_term": False},
    "lab": dict(LAB),
    "lab-nobbi": {**LAB, "bbi": False},
    "lab-nosoft": {**LAB, "soft_term": False},
    "lab-clip": {k: v for k, v in LAB.items() if k not in LAB_OPTIMISER},
    "lab-loss": {"objective": "scahn", "theta_divisor": "K/32"},
}


def variant_of(config: dict) -> str:
  """The VARIANTS name a results file's config matches (else "other")."""
  from jxhash.methods.hsidhn import Config

  defaults = {f: getattr(Config(), f) for f in ("network", "objective", "theta_divisor", "bbi", "soft_term",
                                                *LAB_OPTIMISER)}
  for name, settings in VARIANTS.items():
    if all(config.get(k, v) == v for k, v in {**defaults, **settings}.items()):
      return name
  return "other"


def main(argv=None) -> int:
  return ablation.main(argv, doc=__doc__, method="hsidhn", variants=VARIANTS, variant_of=variant_of)


if __name__ == "__main__":
  sys.exit(main())
