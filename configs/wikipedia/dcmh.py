"""DCMH on Wikipedia with its defaults (no overrides).

    python experiments/run.py --config configs/wikipedia/dcmh.py --bits 32 --seeds 5

Protocol and data: configs/wikipedia/README.md.

Expected results (mean ± std over the seeds; rows as in the README's table):
<!-- expected:start -->
Produced by: python experiments/reproduce.py configs/wikipedia --only dcmh --bits 16,32,64 --seeds 5
| wikipedia | dcmh | 16 | 0.2341 ± 0.0075 | 0.5424 ± 0.0195 | 5 | last | defaults | 865.52 | cpu |
| wikipedia | dcmh | 32 | 0.2378 ± 0.0106 | 0.5548 ± 0.0085 | 5 | last | defaults | 1131.57 | cpu |
| wikipedia | dcmh | 64 | 0.2352 ± 0.0078 | 0.5654 ± 0.0069 | 5 | last | defaults | 845.17 | cpu |
<!-- expected:end -->
"""


def get_config():
  return {"method": "dcmh", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia"}
