"""HSIDHN on Wikipedia with its defaults (no overrides).

    python experiments/run.py --config configs/wikipedia/hsidhn.py --bits 32 --seeds 5

Protocol and data: configs/wikipedia/README.md.
"""


def get_config():
  return {"method": "hsidhn", "dataset": "wikipedia", "data_dir": "../shared/data/wikipedia"}
