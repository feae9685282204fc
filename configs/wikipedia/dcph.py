"""DCPH on Wikipedia with its defaults (no overrides).

    python experiments/run.py --config configs/wikipedia/dcph.py --bits 32 --seeds 5

Protocol and data: configs/wikipedia/README.md.
"""


def get_config():
  return {"method": "dcph", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia"}
