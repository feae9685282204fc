"""HSIDHN on Wikipedia with its defaults (no overrides).

    python experiments/run.py --config configs/wikipedia/hsidhn.py --bits 32 --seeds 5

Protocol and data: configs/wikipedia/README.md.

Expected results (mean ± std over the seeds; rows as in the README's table):
<!-- expected:start -->
Produced by: python experiments/reproduce.py configs/wikipedia --only hsidhn --bits 16,32,64 --seeds 5
| wikipedia | hsidhn (epochs=100) | 16 | 0.2664 ± 0.0079 | 0.6986 ± 0.0031 | 5 | last | defaults | 653.58 | cpu |
| wikipedia | hsidhn (epochs=100) | 32 | 0.2698 ± 0.0031 | 0.6901 ± 0.0037 | 5 | last | defaults | 633.04 | cpu |
| wikipedia | hsidhn (epochs=100) | 64 | 0.2662 ± 0.0100 | 0.6545 ± 0.0034 | 5 | last | defaults | 487.98 | cpu |
<!-- expected:end -->
"""


def get_config():
  return {"method": "hsidhn", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia"}
