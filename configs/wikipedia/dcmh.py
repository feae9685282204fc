"""DCMH on Wikipedia with its defaults (no overrides).

    python experiments/run.py --config configs/wikipedia/dcmh.py --bits 32 --seeds 5

Protocol and data: configs/wikipedia/README.md.

Expected results (mean ± std over the seeds; rows as in the README's table):
<!-- expected:start -->
Produced by: python experiments/reproduce.py configs/wikipedia --only dcmh --bits 32 --seeds 5
| wikipedia | dcmh | 32 | 0.2378 ± 0.0106 | 0.5548 ± 0.0085 | 5 | last | defaults | 1131.57 |
<!-- expected:end -->
"""


def get_config():
  return {"method": "dcmh", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia"}
