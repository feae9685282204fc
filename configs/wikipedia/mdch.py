"""MDCH on Wikipedia with its defaults (no overrides).

    python experiments/run.py --config configs/wikipedia/mdch.py --bits 32 --seeds 5

Protocol and data: configs/wikipedia/README.md.

Expected results (mean ± std over the seeds; rows as in the README's table):
<!-- expected:start -->
Produced by: python experiments/reproduce.py configs/wikipedia --only mdch --bits 32 --seeds 5
| wikipedia | mdch | 32 | 0.2554 ± 0.0059 | 0.6481 ± 0.0071 | 5 | last | defaults | 3245.84 |
<!-- expected:end -->
"""


def get_config():
  return {"method": "mdch", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia"}
