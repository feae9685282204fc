"""DCPH on Wikipedia with its defaults (no overrides).

    python experiments/run.py --config configs/wikipedia/dcph.py --bits 32 --seeds 5

Protocol and data: configs/wikipedia/README.md.

Expected results (mean ± std over the seeds; rows as in the README's table):
<!-- expected:start -->
Produced by: python experiments/reproduce.py configs/wikipedia --only dcph --bits 16,32,64 --seeds 5
| wikipedia | dcph (epochs=12) | 16 | 0.2536 ± 0.0095 | 0.2613 ± 0.0087 | 5 | last | defaults | 41.89 | cpu |
| wikipedia | dcph (epochs=12) | 32 | 0.2522 ± 0.0089 | 0.2654 ± 0.0054 | 5 | last | defaults | 58.89 | cpu |
| wikipedia | dcph (epochs=12) | 64 | 0.2269 ± 0.0080 | 0.2347 ± 0.0020 | 5 | last | defaults | 41.26 | cpu |
<!-- expected:end -->
"""


def get_config():
  return {"method": "dcph", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia"}
