"""DCPH on the NUS-WIDE-21 CLIP-lineage protocol (a prepared folder), with its defaults.

    jxhash prepare nuswide --raw RAW --out data/nuswide-clip --protocol clip
    jxhash train --config configs/nuswide-clip/dcph.py --data-dir data/nuswide-clip --bits 32

Protocol, metric and published numbers: configs/nuswide-clip/README.md. data_dir below is a placeholder:
give the prepared folder with --data-dir; the image features (the extract command's .npz) are
read from image_features.npz inside it unless --data-option image_features=<file> says otherwise.
"""


def get_config():
  return {"method": "dcph", "dataset": "prepared", "data_dir": "data/nuswide-clip", "seeds": 5,
          "data_options": {"image_features": "image_features.npz"}, "top_k": [100, 1000, 5000]}
