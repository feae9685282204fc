"""A seeded synthetic multi-label dataset with real cross-modal structure (the default data)."""

from __future__ import annotations

import numpy as np

from jxhash.data.core import CrossModalData
from jxhash.data.splits import make_split


def load_synthetic(data_dir=None, *, split: str = "random", seed: int = 0, num_items: int = 2000,
                   image_dim: int = 128, text_dim: int = 64, num_labels: int = 10,
                   max_labels: int = 3, noise: float = 0.5, num_query: int = 200,
                   num_train: int = 1000, num_val: int = 100, data_seed: int = 0) -> CrossModalData:
  """Generate paired image/text features that share a label-driven latent.

  Each item draws 1..`max_labels` labels; its latent is the mean of the label prototypes plus
  noise; each modality is its own random non-linear map of that latent plus independent
  noise (text is made non-negative like bag-of-words weights). Items that share labels are
  therefore close in both modalities, which is what a cross-modal hash must recover; chance
  mAP is the mean fraction of database items sharing a label with a query.

  Args:
    data_dir: ignored (nothing is read).
    split, seed: split rule and permutation seed (see `make_split`).
    num_items, image_dim, text_dim, num_labels: sizes.
    max_labels: most labels per item.
    noise: std of the per-modality noise relative to the signal.
    num_query, num_train, num_val: split sizes (train drawn from the retrieval set).
    data_seed: seed of the generated features and labels (kept separate from the split seed).

  Returns:
    CrossModalData named "synthetic".
  """
  del data_dir
  rng = np.random.default_rng(data_seed)
  latent_dim = max(8, 2 * num_labels)
  prototypes = rng.normal(size=(num_labels, latent_dim))
  count = rng.integers(1, max_labels + 1, size=num_items)
  labels = np.zeros((num_items, num_labels), np.uint8)
  for k in range(1, max_labels + 1):
    rows = np.flatnonzero(count == k)
    picks = np.argsort(rng.random((rows.size, num_labels)), axis=1)[:, :k]
    labels[rows[:, None], picks] = 1
  latent = labels @ prototypes / labels.sum(1, keepdims=True)
  latent += 0.3 * rng.normal(size=latent.shape)

  def modality(dim):
    w1 = rng.normal(size=(latent_dim, dim)) / np.sqrt(latent_dim)
    w2 = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    h = np.tanh(latent @ w1) @ w2
    return h + noise * h.std() * rng.normal(size=h.shape)

  image = modality(image_dim).astype(np.float32)
  text = np.abs(modality(text_dim)).astype(np.float32)
  parts = make_split(num_items, num_query=num_query, num_train=num_train, num_val=num_val,
                     rule=split, seed=seed)
  info = dict(parts.pop("info"), data_seed=data_seed)
  return CrossModalData(image=image, text=text, labels=labels, name="synthetic", split_info=info, **parts)
