"""MDCH on the MIRFlickr-25K CLIP-lineage protocol (a prepared folder), with its defaults.

    jxhash prepare mirflickr25k --raw RAW --out data/mirflickr25k-clip --protocol clip
    jxhash train --config configs/mirflickr25k-clip/mdch.py --data-dir data/mirflickr25k-clip --bits 32

Protocol, metric and published numbers: configs/mirflickr25k-clip/README.md. data_dir below is a placeholder:
give the prepared folder with --data-dir; the image features (the extract command's .npz) are
read from image_features.npz inside it unless --data-option image_features=<file> says otherwise.
"""


def get_config():
  return {"method": "mdch", "dataset": "prepared", "data_dir": "data/mirflickr25k-clip", "seeds": 5,
          "data_options": {"image_features": "image_features.npz"}, "top_k": [100, 1000, 5000]}
