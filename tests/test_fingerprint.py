"""The codes every method produces, pinned bit for bit: a guard for refactors.

`tests/data/codes_fingerprint.json` holds, per case, the full config and trainer options and
the ±1 codes of all 300 items of a small synthetic dataset in both modalities (packed, hex). A
change that is meant to keep behaviour (a refactor) must reproduce them exactly. A change that
is meant to alter a method keeps the earlier variant selectable by a config value: the pinned
config names that value, so the old variant stays reproducible (a new config field that
changes behaviour must be added to the pinned configs with its previous-behaviour value).

Regenerate only when a behaviour change is intended and explained in the commit:
    JXHASH_REGENERATE_FINGERPRINT=1 python -m pytest tests/test_fingerprint.py
Codes are bit-identical on the same machine size (2 CPU cores in CI and here); float
reassociation on other hardware may flip codes near 0, which is why this test runs on CPU.
"""

import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest

from jxhash import data
from jxhash.training import evaluation
from jxhash.training import inputs
from jxhash.training import runstate
from jxhash.training import trainer
from jxhash.methods import METHODS, get_method

PATH = pathlib.Path(__file__).parent / "data" / "codes_fingerprint.json"
SMALL = dict(num_items=300, num_query=40, num_train=96, num_val=24)
PIXELS = dict(image_size=224, num_labels=4, num_items=80, num_query=16, num_train=32, num_val=8)
TINY_CNN = {"cnn_channels": (6, 8, 8, 8, 8), "cnn_fc_width": 16}


def _cases() -> dict:
  cases = {}
  for name in sorted(METHODS):
    for bits in (16, 32):
      cases[f"{name}-{bits}"] = dict(method=name, overrides={"bits": bits}, data=SMALL, options={})
  cases["dcmh-16-seeds2"] = dict(method="dcmh", overrides={"bits": 16}, data=SMALL, options={"num_seeds": 2})
  cases["dcph-16-seeds2"] = dict(method="dcph", overrides={"bits": 16}, data=SMALL, options={"num_seeds": 2})
  cases["dcmh-16-pixels-streamed"] = dict(method="dcmh", overrides={"bits": 16, **TINY_CNN}, data=PIXELS,
                                          options={"stream": True})
  return cases


def _tuples(x):
  return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def _run(method: str, config: dict, data_options: dict, options: dict) -> dict:
  """{modality: (seeds, N, K) int8 codes} of a run."""
  spec = get_method(method)
  ds = data.load("synthetic", **data_options)
  cfg = spec.Config(**{k: _tuples(v) for k, v in config.items()})
  result = trainer.fit(spec, cfg, ds, trainer.TrainOptions(progress=False, eval_every=0, **options))
  out = {}
  for m in ("image", "text"):
    per_seed = []
    for i in range(options.get("num_seeds", 1)):
      model = runstate.seed_slice(result.state.model, i)
      per_seed.append(evaluation.encode(spec, model, m, getattr(ds, m),
                                   transform=lambda x, m=m: inputs.normalize(result.normalizer, m, x)))
    out[m] = np.stack(per_seed)
  return out


def _pack(codes: np.ndarray) -> str:
  return np.packbits(codes.reshape(-1) > 0).tobytes().hex()


def _unpack(text: str, shape) -> np.ndarray:
  bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))[:int(np.prod(shape))]
  return np.where(bits.reshape(shape) > 0, 1, -1).astype(np.int8)


def _regenerate() -> None:
  record = {}
  for case, c in _cases().items():
    spec = get_method(c["method"])
    config = dataclasses.replace(spec.Config(), **{**spec.smoke, **c["overrides"]})
    config_json = json.loads(json.dumps(dataclasses.asdict(config)))
    codes = _run(c["method"], config_json, c["data"], c["options"])
    record[case] = {"method": c["method"], "config": config_json, "data": c["data"], "options": c["options"],
                    "codes": {m: {"shape": list(v.shape), "hex": _pack(v)} for m, v in codes.items()}}
  PATH.parent.mkdir(exist_ok=True)
  PATH.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


if os.environ.get("JXHASH_REGENERATE_FINGERPRINT") == "1":
  _regenerate()

_RECORD = json.loads(PATH.read_text()) if PATH.exists() else {}


def test_every_method_and_path_is_pinned():
  assert sorted(_RECORD) == sorted(_cases())


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(_RECORD))
def test_codes_are_unchanged(case):
  c = _RECORD[case]
  codes = _run(c["method"], c["config"], c["data"], c["options"])
  for m, want in c["codes"].items():
    expected = _unpack(want["hex"], want["shape"])
    differ = int(np.sum(codes[m] != expected))
    assert differ == 0, f"{case}: {differ} of {expected.size} {m} code bits changed"
