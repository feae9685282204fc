"""DCPH on the NUS-WIDE TC-21 DCMH-lineage protocol (a prepared folder), with its defaults.

    python experiments/prepare.py nuswide --raw RAW --out data/nuswide-dcmh --protocol dcmh
    python experiments/run.py --config configs/nuswide-dcmh/dcph.py --data-dir data/nuswide-dcmh --bits 32

Protocol, metric and published numbers: configs/nuswide-dcmh/README.md. data_dir below is a placeholder:
give the prepared folder with --data-dir; the image features (the extract command's .npz) are
read from image_features.npz inside it unless --data-option image_features=<file> says otherwise.
"""


def get_config():
  return {"method": "dcph", "dataset": "prepared", "data_dir": "data/nuswide-dcmh", "seeds": 5,
          "data_options": {"image_features": "image_features.npz"}}
