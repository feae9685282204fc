"""UCHM on Wikipedia with its defaults (no overrides).

    python experiments/run.py --config configs/wikipedia/uchm.py --bits 32 --seeds 5

Protocol and data: configs/wikipedia/README.md.

Expected results (mean ± std over the seeds; rows as in the README's table):
<!-- expected:start -->
Produced by: python experiments/reproduce.py configs/wikipedia --only uchm --bits 16,32,64 --seeds 5
| wikipedia | uchm (epochs=100, lr=0.01) | 16 | 0.2329 ± 0.0029 | 0.4713 ± 0.0067 | 5 | last | defaults | 243.66 | cpu |
| wikipedia | uchm (epochs=100, lr=0.01) | 32 | 0.2439 ± 0.0058 | 0.4667 ± 0.0047 | 5 | last | defaults | 289.72 | cpu |
| wikipedia | uchm (epochs=100, lr=0.01) | 64 | 0.2576 ± 0.0011 | 0.4458 ± 0.0051 | 5 | last | defaults | 330.07 | cpu |
<!-- expected:end -->
"""


def get_config():
  return {"method": "uchm", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia"}
