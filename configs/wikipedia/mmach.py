"""MMACH on Wikipedia with its defaults (no overrides).

    python experiments/run.py --config configs/wikipedia/mmach.py --bits 32 --seeds 5

Protocol and data: configs/wikipedia/README.md.

Expected results (mean ± std over the seeds; rows as in the README's table):
<!-- expected:start -->
Produced by: python experiments/reproduce.py configs/wikipedia --only mmach --bits 32 --seeds 5
| wikipedia | mmach | 32 | 0.2951 ± 0.0028 | 0.7322 ± 0.0029 | 5 | last | defaults | 1859.05 |
<!-- expected:end -->
"""


def get_config():
  return {"method": "mmach", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia"}
