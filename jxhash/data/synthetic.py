"""A seeded synthetic multi-label dataset with real cross-modal structure (the default data)."""

from __future__ import annotations

import numpy as np

from jxhash.data import bounds
from jxhash.data.core import CrossModalData, RowSource, digest_array
from jxhash.data.options import Option, Schema
from jxhash.data.splits import make_split
from jxhash.errors import DataError

OPTIONS = Schema("synthetic", [
    Option("num_items", "int", 2000, "items generated", low=1),
    Option("image_dim", "int", 128, "image feature width", low=1),
    Option("text_dim", "int", 64, "text feature width", low=1),
    Option("num_labels", "int", 10, "label classes", low=1),
    Option("max_labels", "int", 3, "most labels per item (at most num_labels)", low=1),
    Option("noise", "float", 0.5, "std of the per-modality noise relative to the signal", low=0),
    Option("num_query", "int", 200, "query items", low=1),
    Option("num_train", "int", 1000, "training items, drawn from the retrieval set", low=1),
    Option("num_val", "int", 100, "validation items, from retrieval items outside train", low=0),
    Option("data_seed", "int", 0, "seed of the generated features and labels (the split has its own)", low=0),
    Option("image_size", "int", 0, "if > 0, the image view is size×size×3 uint8 pixels made on demand",
           low=0, high=1024),
    Option("text_density", "float", 0.0, "0: dense non-negative text features; in (0, 1): binary bag-of-words "
           "tags with this fraction set", low=0, high=1),
    Option("text_tokens", "int", 0, "if > 0, the text view is CLIP token ids of this length (at least 3): "
           "<start_of_text>, the item's strongest text dimensions as word ids, <end_of_text>, zero padding",
           low=0, high=77),
    Option("feature_scale", "float", 1.0, "multiplies both modalities' features (raw feature scales differ)",
           low=1e-12),
])


def load_synthetic(data_dir=None, *, split: str = "random", seed: int = 0, **options) -> CrossModalData:
  """Generate paired image/text features that share a label-driven latent.

  Each item draws 1..`max_labels` labels; its latent is the mean of the label prototypes plus
  noise; each modality is its own random non-linear map of that latent plus independent
  noise (text is made non-negative like bag-of-words weights). Items that share labels are
  therefore close in both modalities, which is what a cross-modal hash must recover; chance
  mAP is the mean fraction of database items sharing a label with a query.

  Args:
    data_dir: ignored (nothing is read).
    split, seed: split rule and permutation seed (see `make_split`).
    **options: `OPTIONS` (docs/data.md): num_items, image_dim, text_dim, num_labels (sizes);
      max_labels (most labels per item); noise (std of the per-modality noise relative to
      the signal); num_query, num_train, num_val (split sizes, train drawn from the
      retrieval set); data_seed (seed of the generated features and labels, kept separate
      from the split seed); image_size: if > 0, the image view is pixels instead of
      features: a lazy `SyntheticPixels` source of (num_items, image_size, image_size, 3)
      uint8 images drawn on demand (nothing held in memory), so a CNN and the streamed
      trainer can be tested and benchmarked at any dataset size (e.g. MIRFlickr's
      20015 × 224 × 224 × 3).

  Returns:
    CrossModalData named "synthetic"; split_info records every option.
  """
  o = OPTIONS.check(options)
  num_items, num_labels, max_labels = o["num_items"], o["num_labels"], o["max_labels"]
  if max_labels > num_labels:
    raise DataError(f"dataset 'synthetic': max_labels={max_labels} exceeds num_labels={num_labels}")
  if o["num_query"] + o["num_train"] > num_items:
    raise DataError(f"dataset 'synthetic': num_query={o['num_query']} + num_train={o['num_train']} do not fit "
                    f"num_items={num_items}")
  latent_dim = max(8, 2 * num_labels)
  widest = max(o["image_dim"], o["text_dim"])
  # float64 working arrays: latent, the two maps and three (N, dim) temporaries per modality.
  need = 8 * (num_items * (latent_dim + 3 * widest + 2 * num_labels) + (latent_dim + widest) * widest)
  bounds.check_budget(need, "dataset 'synthetic'", f"generating {num_items} items of width {widest}")
  data_seed, noise, image_size = o["data_seed"], o["noise"], o["image_size"]
  image_dim, text_dim = o["image_dim"], o["text_dim"]
  rng = np.random.default_rng(data_seed)
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

  image = modality(image_dim)
  text = np.abs(modality(text_dim))
  if 0 < o["text_density"] < 1:
    # bag-of-words tags: each item's strongest text dimensions, about text_density of all entries
    text = (text > np.quantile(text, 1.0 - o["text_density"])).astype(np.float64)
  image = (o["feature_scale"] * image).astype(np.float32)
  text = (o["feature_scale"] * text).astype(np.float32)
  if image_size > 0:
    image = SyntheticPixels(labels, image_size, seed=data_seed, noise=noise)
  text_kind = "features"
  if o["text_tokens"]:
    text, text_kind = token_text(text, o["text_tokens"]), "clip-tokens"
  parts = make_split(num_items, num_query=o["num_query"], num_train=o["num_train"], num_val=o["num_val"],
                     rule=split, seed=seed)
  info = dict(parts.pop("info"), data_seed=data_seed)
  if image_size > 0:
    info["image_size"] = image_size
  info["options"] = OPTIONS.record(o)
  return CrossModalData(image=image, text=text, labels=labels, name="synthetic", split_info=info,
                        text_kind=text_kind, **parts)


# CLIP's special ids (jxhash.nets.clip_tokenizer); word ids are drawn below them
START_OF_TEXT_ID, END_OF_TEXT_ID = 49406, 49407
_FIRST_WORD_ID = 320  # past the 256 byte characters, among ordinary "word</w>" entries


def token_text(text: np.ndarray, length: int) -> np.ndarray:
  """(N, length) int32 CLIP-style token ids from (N, T) text features: per item, <start_of_text>,
  the ids of its length - 2 strongest dimensions (strongest first; dimension j is word id
  320 + j), <end_of_text>, then zeros if T < length - 2. Items that share labels share strong dimensions,
  so the ids carry the same cross-modal structure as the features, for a text tower to learn."""
  if length < 3:
    raise DataError(f"dataset 'synthetic': text_tokens={length} leaves no room for a word (at least 3)")
  words = min(length - 2, text.shape[1])
  out = np.zeros((text.shape[0], length), np.int32)
  out[:, 0] = START_OF_TEXT_ID
  out[:, 1:1 + words] = _FIRST_WORD_ID + np.argsort(-text, axis=1, kind="stable")[:, :words]
  out[:, 1 + words] = END_OF_TEXT_ID
  return out


class SyntheticPixels(RowSource):
  """Label-driven pixel images made on demand: a lazy row source (see `core.RowSource`).

  Image i is a noise texture (one of a fixed bank, chosen by i) with one coloured square per
  label of item i, at that label's place in a grid and in that label's colour; so images that
  share labels share squares. Rows depend only on (data seed, noise, labels of i): reading is
  deterministic and costs about a memory copy per image.
  """

  _BANK = 16

  def __init__(self, labels: np.ndarray, size: int, *, seed: int = 0, noise: float = 0.5):
    self.labels = labels
    self.shape = (labels.shape[0], size, size, 3)
    self.dtype = np.dtype(np.uint8)
    self._params = {"size": int(size), "seed": int(seed), "noise": float(noise)}
    rng = np.random.default_rng([seed, 1])
    num_labels = labels.shape[1]
    self.colors = rng.uniform(0, 255, size=(num_labels, 3))
    grid = int(np.ceil(np.sqrt(num_labels)))
    self.cell = max(1, size // grid)
    self.corners = [(c // grid * self.cell, c % grid * self.cell) for c in range(num_labels)]
    spread = 64 * noise
    self.bank = np.clip(rng.normal(128, spread, size=(self._BANK, size, size, 3)), 0, 255).astype(np.uint8)

  def _read_sorted(self, rows: np.ndarray) -> np.ndarray:
    out = self.bank[rows % self._BANK]  # fancy indexing copies
    for i, r in enumerate(rows):
      for c in np.flatnonzero(self.labels[r]):
        top, left = self.corners[c]
        square = out[i, top:top + self.cell, left:left + self.cell]
        square[...] = (square // 2 + self.colors[c] // 2).astype(np.uint8)
    return out

  def identity(self) -> dict:
    """The generator's parameters and the labels that place the squares."""
    return {"synthetic_pixels": self._params, "labels": digest_array(self.labels)}
