"""MDCH on the MS-COCO 2017 CLIP-lineage protocol (a prepared folder), with its defaults.

    jxhash prepare coco --raw RAW --out data/coco-clip --protocol clip
    jxhash train --config configs/coco-clip/mdch.py --data-dir data/coco-clip --bits 32

Protocol, metric and published numbers: configs/coco-clip/README.md. data_dir below is a placeholder:
give the prepared folder with --data-dir; the image features (the extract command's .npz) are
read from image_features.npz inside it unless --data-option image_features=<file> says otherwise.
"""


def get_config():
  return {"method": "mdch", "dataset": "prepared", "data_dir": "data/coco-clip", "seeds": 5,
          "data_options": {"image_features": "image_features.npz"}, "top_k": [100, 1000, 5000]}
