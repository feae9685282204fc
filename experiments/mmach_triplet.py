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

   (--data-dir defaults to ../shared/data/wikipedia, relative to the current directory.)

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

import sys

from jxhash.commands import ablation

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


def main(argv=None) -> int:
  return ablation.main(argv, doc=__doc__, method=METHOD, variants=VARIANTS, variant_of=variant_of)


if __name__ == "__main__":
  sys.exit(main())
