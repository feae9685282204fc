"""HSIDHN on Wikipedia with its defaults (no overrides).

    python experiments/run.py --config configs/wikipedia/hsidhn.py --bits 32 --seeds 5

Wikipedia's official protocol: the 693 test items query the 2173 training items, which are
also the retrieval set. There is no val split in it, so the last epoch is evaluated (the
defaults were chosen on a val split carved from the training items: docs/defaults.md).
The data is read from ../shared/data/wikipedia (relative paths in a config file start at the
repository root); pass --data-dir to read it from elsewhere.

Expected results (mean ± std over the seeds; rows as in the README's table):
<!-- expected:start -->
Produced by: python experiments/reproduce.py configs/wikipedia --bits 32 --seeds 5
| wikipedia | hsidhn | 32 | 0.2698 ± 0.0031 | 0.6901 ± 0.0037 | 5 | last | defaults | 633.04 |
<!-- expected:end -->
"""


def get_config():
  return {"method": "hsidhn", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia"}
