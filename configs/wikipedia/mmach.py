"""MMACH on Wikipedia with its defaults (no overrides).

    python experiments/run.py --config configs/wikipedia/mmach.py --bits 32 --seeds 5

Protocol and data: configs/wikipedia/README.md.

Expected results (mean ± std over the seeds; rows as in the README's table):
<!-- expected:start -->
Produced by: python experiments/reproduce.py configs/wikipedia --only mmach --bits 16,32,64 --seeds 5
| wikipedia | mmach (epochs=100) | 16 | 0.2881 ± 0.0035 | 0.7272 ± 0.0067 | 5 | last | defaults | 135.81 | NVIDIA H100 80GB HBM3 |
| wikipedia | mmach (epochs=100) | 32 | 0.2951 ± 0.0028 | 0.7322 ± 0.0029 | 5 | last | defaults | 1859.05 | cpu |
| wikipedia | mmach (epochs=100) | 64 | 0.2968 ± 0.0061 | 0.7284 ± 0.0032 | 5 | last | defaults | 134.05 | NVIDIA H100 80GB HBM3 |
<!-- expected:end -->
"""


def get_config():
  return {"method": "mmach", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia"}
