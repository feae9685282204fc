"""Every method's defaults train on inputs of any width and scale (docs/defaults.md).

For each registered method, its default config (only `epochs` shortened, to keep CI's CPU time
bounded; every other value, the init, learning-rate scaling and clipping included, is the
default) trains on synthetic data of two kinds: narrow dense features (10-d image and text),
and wide, raw-scaled ones (1024-d image features ×1000, 512-d binary bag-of-words text). Each
run must beat chance by MARGIN in both directions, and no epoch's loss may exceed 10× the
median loss of the epochs before it (a spike or a divergence).
"""

import dataclasses

import numpy as np
import pytest

from jxhash import data, metrics
from jxhash.training import trainer
from jxhash.methods import METHODS

pytestmark = pytest.mark.slow  # every method trains twice

SIZES = dict(num_items=700, num_query=100, num_train=256, num_val=0)
VARIANTS = {
    "narrow": dict(image_dim=10, text_dim=10),
    "wide-bow-scaled": dict(image_dim=1024, text_dim=512, text_density=0.05, feature_scale=1000.0),
}
EPOCHS = 60
MARGIN = 0.08


def _losses(history: list) -> dict:
  """{name: [per-epoch value]} of every logged loss of the hashing stage(s)."""
  out = {}
  for entry in history:
    for k, v in entry.items():
      if k.endswith("loss") and entry["stage"] != "proxy":
        out.setdefault(f"{entry['stage']}/{k}", []).append(v)
  return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", sorted(METHODS))
def test_default_run_beats_chance_without_loss_spikes(name, variant):
  spec = METHODS[name]
  ds = data.load("synthetic", **SIZES, **VARIANTS[variant])
  config = dataclasses.replace(spec.Config(), epochs=EPOCHS)
  result = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=0))
  chance = metrics.chance_map(ds.labels[ds.query], ds.labels[ds.retrieval])
  for direction in ("i2t", "t2i"):
    assert result.final[direction]["map"] > chance + MARGIN, (direction, result.final[direction]["map"], chance)
  for key, values in _losses(result.history).items():
    values = np.abs(np.asarray(values))
    for i in range(3, len(values)):
      assert values[i] <= 10 * np.median(values[:i]) + 1e-6, (key, i, values[i], np.median(values[:i]))
