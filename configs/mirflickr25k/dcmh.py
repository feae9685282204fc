"""DCMH on the MIRFlickr-25K tags→labels sanity protocol with its defaults (no overrides).

    python experiments/run.py --config configs/mirflickr25k/dcmh.py --bits 32 --seeds 5

Protocol and data: configs/mirflickr25k/README.md.
"""


def get_config():
  return {"method": "dcmh", "dataset": "mirflickr25k", "data_dir": "../shared/data/mirflickr25k",
          "data_options": {"image": "tags"}}
