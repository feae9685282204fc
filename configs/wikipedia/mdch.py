"""MDCH on Wikipedia with its defaults (no overrides).

    python experiments/run.py --config configs/wikipedia/mdch.py --bits 32 --seeds 5

Protocol and data: configs/wikipedia/README.md.

Expected results (mean ± std over the seeds; rows as in the README's table):
<!-- expected:start -->
Produced by: python experiments/reproduce.py configs/wikipedia --only mdch --bits 16,32,64 --seeds 5
| wikipedia | mdch (epochs=500, lr=20) | 16 | 0.2501 ± 0.0078 | 0.6297 ± 0.0157 | 5 | last | defaults | 57.95 | NVIDIA H100 80GB HBM3 |
| wikipedia | mdch (epochs=500, lr=20) | 32 | 0.2554 ± 0.0059 | 0.6481 ± 0.0071 | 5 | last | defaults | 3245.84 | cpu |
| wikipedia | mdch (epochs=500, lr=20) | 64 | 0.2605 ± 0.0088 | 0.6593 ± 0.0016 | 5 | last | defaults | 70.08 | NVIDIA H100 80GB HBM3 |
<!-- expected:end -->
"""


def get_config():
  return {"method": "mdch", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia"}
