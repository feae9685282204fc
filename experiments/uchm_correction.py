"""UCHM: the generated similarity with and without UCHTIM's hash-similarity correction.

Variants (`--variant`), every other setting at the UCHM defaults:
  none       correction=none (the generator's S_MIE as it is: the default before this study)
  codes      correction=codes: the last `correction_epochs` = 5 hashing epochs replace the
             target where |code similarity - S| > 0.8 by sign(code similarity - S), weight 1 - |S|
  codes-60   the same from hashing epoch 41 on (UCHTIM's 40 warm-up epochs, then the rest)

The commands mirror experiments/mmach_triplet.py (both run jxhash.commands.ablation): selection on
a carved val split, each seed's last-epoch model scored on val (no label reaches training):

    python experiments/uchm_correction.py val --variant codes --seeds 5 \
        --out results/uchm_correction/val-codes.json

the test protocol through the ordinary CLI (no val split, so the last epoch is evaluated):

    python experiments/run.py --method=uchm --dataset=wikipedia --data-dir=../shared/data/wikipedia \
        --bits=32 --seeds 5 --set correction=codes --no-checkpoint --no-progress \
        --out results/uchm_correction/test-codes.json

and the tables of docs/uchm_correction.md:

    python experiments/uchm_correction.py table results/uchm_correction/val-*.json
"""

from __future__ import annotations

import sys

from jxhash.commands import ablation

VARIANTS = {
    "none": {"correction": "none"},
    "codes": {"correction": "codes"},
    "codes-60": {"correction": "codes", "correction_epochs": 60},
}


def variant_of(config: dict) -> str:
  """The VARIANTS name a results file's config matches; a config without the correction
  fields predates them and ran "none"."""
  config = {"correction": "none", "correction_epochs": 5, **config}
  if config["correction"] == "none":
    return "none"
  for name, settings in VARIANTS.items():
    if name != "none" and all(config[k] == v for k, v in {"correction_epochs": 5, **settings}.items()):
      return name
  return f"codes-{config['correction_epochs']}"


def main(argv=None) -> int:
  return ablation.main(argv, doc=__doc__, method="uchm", variants=VARIANTS, variant_of=variant_of)


if __name__ == "__main__":
  sys.exit(main())
