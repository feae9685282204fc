"""HSIDHN on the IAPR TC-12 DCMH-lineage protocol (a prepared folder), with its defaults.

    python experiments/prepare.py iapr --raw RAW --out data/iapr-dcmh --protocol dcmh
    python experiments/run.py --config configs/iapr-dcmh/hsidhn.py --data-dir data/iapr-dcmh --bits 32

Protocol, metric and published numbers: configs/iapr-dcmh/README.md. data_dir below is a placeholder:
give the prepared folder with --data-dir; the image features (the extract command's .npz) are
read from image_features.npz inside it unless --data-option image_features=<file> says otherwise.
"""


def get_config():
  return {"method": "hsidhn", "dataset": "prepared", "data_dir": "data/iapr-dcmh", "seeds": 5,
          "data_options": {"image_features": "image_features.npz"}}
