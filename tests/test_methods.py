"""Every registered method: compiles for 16/32/64 bits, trains finitely, restores exactly,
and gives the same result on 4 simulated devices as on one."""

import dataclasses
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jxhash import checkpoint, data, train
from jxhash.methods import METHODS, get_method
from jxhash.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = dict(num_items=300, num_query=40, num_train=96, num_val=24)


def _smoke(name, **overrides):
  spec = get_method(name)
  return spec, dataclasses.replace(spec.Config(), **{**spec.smoke, **overrides})


def test_unknown_method_lists_the_valid_names():
  with pytest.raises(UserError, match="choose from"):
    get_method("no-such-method")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_spec_is_complete(name):
  spec = METHODS[name]
  assert spec.name == name
  assert spec.fidelity and spec.reference
  config = spec.Config()
  assert config.bits > 0 and config.epochs > 0 and config.batch_size > 0
  assert dataclasses.is_dataclass(config) and type(config).__dataclass_params__.frozen


@pytest.mark.parametrize("bits", [16, 32, 64])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_smoke_run_compiles_and_stays_finite(name, bits):
  ds = data.load("synthetic", **SMALL)
  spec, config = _smoke(name, bits=bits)
  result = train.fit(spec, config, ds, train.TrainOptions(progress=False, eval_every=0))
  losses = {k: v for h in result.history for k, v in h.items() if k not in ("epoch", "stage")}
  assert losses and all(np.isfinite(v) for v in losses.values())
  for direction in ("i2t", "t2i"):
    assert 0.0 <= result.final[direction]["map"] <= 1.0
  model = train.seed_slice(result.state.model, 0)
  for m in ("image", "text"):
    codes = train.encode(spec, model, m, train.normalize(result.normalizer, m, getattr(ds, m)[:7]))
    assert codes.shape == (7, bits) and set(np.unique(codes)) <= {-1, 1}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_restored_checkpoint_gives_identical_codes(name, tmp_path):
  ds = data.load("synthetic", **SMALL)
  spec, config = _smoke(name, bits=16)
  options = train.TrainOptions(progress=False, eval_every=1)
  store = checkpoint.CheckpointStore.open(tmp_path, checkpoint.run_metadata(spec, config, ds, options))
  result = train.fit(spec, config, ds, options, store=store)
  enc = checkpoint.restore(tmp_path)
  model = train.seed_slice(result.state.model, 0)
  for m in ("image", "text"):
    x = getattr(ds, m)
    expected = train.encode(spec, model, m, train.normalize(result.normalizer, m, x))
    np.testing.assert_array_equal(enc.encode(m, x), expected)


_DEVICES_SCRIPT = """
import dataclasses, sys, numpy as np, jax
from jxhash import data, train
from jxhash.methods import METHODS
ds = data.load("synthetic", num_items=300, num_query=40, num_train=96, num_val=24)
out = {}
for name, spec in sorted(METHODS.items()):
  config = dataclasses.replace(spec.Config(), **{**spec.smoke, "bits": 16, "batch_size": 32})
  r = train.fit(spec, config, ds, train.TrainOptions(progress=False, eval_every=0))
  model = train.seed_slice(r.state.model, 0)
  out[name] = np.asarray(spec.encode(model, "image", train.normalize(r.normalizer, "image", ds.image[ds.query])))
  if name == "dcmh":  # the streamed path shards host batches over the devices itself
    r = train.fit(spec, config, ds, train.TrainOptions(progress=False, eval_every=0, stream=True))
    model = train.seed_slice(r.state.model, 0)
    out["dcmh-streamed"] = np.asarray(spec.encode(model, "image", train.normalize(r.normalizer, "image", ds.image[ds.query])))
np.savez(sys.argv[1], **out)
print(len(jax.devices()))
"""


def test_four_simulated_devices_match_one(tmp_path):
  outs = {}
  for n in (1, 4):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
    path = tmp_path / f"codes{n}.npz"
    proc = subprocess.run([sys.executable, "-c", _DEVICES_SCRIPT, str(path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(n)
    outs[n] = dict(np.load(path))
  assert sorted(outs[1]) == sorted([*METHODS, "dcmh-streamed"])
  np.testing.assert_array_equal(outs[1]["dcmh-streamed"], outs[1]["dcmh"])
  for name in outs[1]:
    # batch rows split over 4 devices reassociate float sums: equal up to rounding
    np.testing.assert_allclose(outs[4][name], outs[1][name], rtol=2e-3, atol=2e-3, err_msg=name)


@pytest.mark.parametrize("name", ["dcmh", "mmach"])
def test_seed_i_of_a_vmapped_run_equals_a_separate_run(name, tmp_path):
  ds = data.load("synthetic", **SMALL)
  spec, config = _smoke(name, bits=16)
  options = train.TrainOptions(progress=False, eval_every=0, num_seeds=3, seed=5)
  store = checkpoint.CheckpointStore.open(tmp_path, checkpoint.run_metadata(spec, config, ds, options))
  multi = train.fit(spec, config, ds, options, store=store)
  single = train.fit(spec, config, ds, train.TrainOptions(progress=False, eval_every=0, seed=7))
  enc = checkpoint.restore(tmp_path, seed=2)  # model seed 5 + 2
  for m in ("image", "text"):
    x = getattr(ds, m)
    alone = train.encode(spec, train.seed_slice(single.state.model, 0), m, train.normalize(single.normalizer, m, x))
    np.testing.assert_array_equal(enc.encode(m, x), alone)
  for d in ("i2t", "t2i"):
    assert abs(multi.per_seed[2][d]["map"] - single.final[d]["map"]) < 1e-6
    spread = [r[d]["map"] for r in multi.per_seed]
    assert multi.final[d]["map"] == pytest.approx(np.mean(spread))
    assert multi.final[d]["map_std"] == pytest.approx(np.std(spread))
