"""Every registered method (and a toy 7th one, `toy_method.py`, registered here the way a new
method is): a complete spec, a smoke run that stays finite and restores to identical codes,
seeds that equal separate runs, and the same result on 4 simulated devices as on one."""

import dataclasses
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import toy_method
from conftest import TINY_SPLIT
from jxhash import checkpoint, data
from jxhash.training import evaluation
from jxhash.training import inputs
from jxhash.training import runstate
from jxhash.training import trainer
from jxhash.methods import METHODS, get_method
from jxhash.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = TINY_SPLIT
REGISTRY = sorted(METHODS) + ["toy"]


@pytest.fixture
def registered(monkeypatch):
  """The registry with the toy method added by its one registry line."""
  monkeypatch.setitem(METHODS, "toy", toy_method.SPEC)
  return METHODS


def _smoke(name, **overrides):
  spec = get_method(name)
  return spec, dataclasses.replace(spec.Config(), **{**spec.smoke, **overrides})


def test_unknown_method_lists_the_valid_names():
  with pytest.raises(UserError, match="choose from"):
    get_method("no-such-method")


@pytest.mark.parametrize("name", REGISTRY)
def test_spec_is_complete(name, registered):
  spec = registered[name]
  assert spec.name == name
  assert spec.fidelity and spec.reference
  config = spec.Config()
  assert config.bits > 0 and config.epochs > 0 and config.batch_size > 0
  assert dataclasses.is_dataclass(config) and type(config).__dataclass_params__.frozen
  assert set(spec.smoke) <= {f.name for f in dataclasses.fields(config)}


def test_the_readme_fidelity_column_quotes_each_spec():
  """The README's methods table says what `spec.fidelity` says, word for word (its docs path a link)."""
  text = (ROOT / "README.md").read_text()
  table = text.split("| method | paper | fidelity |\n|---|---|---|\n", 1)[1].split("\n\n", 1)[0]
  rows = {}
  for line in table.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
    name = cells[0].strip("`")
    rows[name] = re.sub(r"\[([^\]]+)\]\(\1\)", r"\1", cells[2])  # [path](path) -> path
  assert sorted(rows) == sorted(METHODS)
  for name, spec in METHODS.items():
    assert rows[name] == spec.fidelity, name


# the quick tier trains the baseline and the toy method end to end; the other methods' runs are slow
SMOKE = [name if name in ("dcmh", "toy") else pytest.param(name, marks=pytest.mark.slow) for name in REGISTRY]


@pytest.mark.parametrize("name", SMOKE)
def test_smoke_run_stays_finite_and_restores_identical_codes(name, registered, tmp_path):
  ds = data.load("synthetic", **SMALL)
  spec, config = _smoke(name, bits=16)
  options = trainer.TrainOptions(progress=False, eval_every=1)
  store = checkpoint.CheckpointStore.open(tmp_path, checkpoint.run_metadata(spec, config, ds, options))
  result = trainer.fit(spec, config, ds, options, store=store)
  epochs = sum(stage.epochs for stage in spec.stages(config, ds.train.size))
  assert [h["epoch"] for h in result.history] == list(range(1, epochs + 1))
  logged = [v for h in result.history for k, v in h.items() if k not in ("epoch", "stage")]
  assert logged and np.all(np.isfinite(logged))
  # selection: the first epoch with the best val mAP (each method's smoke run evaluates on val)
  scored = [(h["val_map"], -h["epoch"]) for h in result.history if "val_map" in h]
  best = -max(scored)[1]
  stages = spec.stages(config, ds.train.size)
  if len(stages) == 1:
    assert result.selected == f"best-val@{best}"
  else:  # counted within its stage, so that pre-training epochs do not shift the number
    stage = result.history[best - 1]["stage"]
    first = min(h["epoch"] for h in result.history if h["stage"] == stage) - 1
    assert result.selected == f"best-val@{stage}:{best - first}"
  for direction in ("i2t", "t2i"):
    assert result.final[direction]["num_queries"] == ds.query.size
  enc = checkpoint.restore(tmp_path)
  model = runstate.seed_slice(result.state.model, 0)
  for m in ("image", "text"):
    x = getattr(ds, m)
    expected = evaluation.encode(spec, model, m, inputs.normalize(result.normalizer, m, x))
    assert expected.shape == (ds.num_items, 16) and set(np.unique(expected)) == {-1, 1}
    np.testing.assert_array_equal(enc.encode(m, x), expected)


_DEVICES_SCRIPT = """
import dataclasses, sys, numpy as np, jax
from jxhash import data
from jxhash.training import evaluation
from jxhash.training import inputs
from jxhash.training import runstate
from jxhash.training import trainer
from jxhash.methods import METHODS
ds = data.load("synthetic", num_items=300, num_query=40, num_train=96, num_val=24)
out = {}
for name, spec in sorted(METHODS.items()):
  config = dataclasses.replace(spec.Config(), **{**spec.smoke, "bits": 16, "batch_size": 32})
  r = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=0))
  model = runstate.seed_slice(r.state.model, 0)
  out[name] = np.asarray(spec.encode(model, "image", inputs.normalize(r.normalizer, "image", ds.image[ds.query])))
  if name == "dcmh":  # the streamed path shards host batches over the devices itself
    r = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=0, stream=True))
    model = runstate.seed_slice(r.state.model, 0)
    out["dcmh-streamed"] = np.asarray(spec.encode(model, "image", inputs.normalize(r.normalizer, "image", ds.image[ds.query])))
np.savez(sys.argv[1], **out)
print(len(jax.devices()))
"""


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dcmh", "mmach"])
def test_seed_i_of_a_vmapped_run_equals_a_separate_run(name, tmp_path):
  ds = data.load("synthetic", **SMALL)
  spec, config = _smoke(name, bits=16)
  options = trainer.TrainOptions(progress=False, eval_every=0, num_seeds=3, seed=5)
  store = checkpoint.CheckpointStore.open(tmp_path, checkpoint.run_metadata(spec, config, ds, options))
  multi = trainer.fit(spec, config, ds, options, store=store)
  single = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=0, seed=7))
  enc = checkpoint.restore(tmp_path, seed=2)  # model seed 5 + 2
  for m in ("image", "text"):
    x = getattr(ds, m)
    alone = evaluation.encode(spec, runstate.seed_slice(single.state.model, 0), m, inputs.normalize(single.normalizer, m, x))
    np.testing.assert_array_equal(enc.encode(m, x), alone)
  for d in ("i2t", "t2i"):
    assert abs(multi.per_seed[2][d]["map"] - single.final[d]["map"]) < 1e-6
    spread = [r[d]["map"] for r in multi.per_seed]
    assert multi.final[d]["map"] == pytest.approx(np.mean(spread))
    assert multi.final[d]["map_std"] == pytest.approx(np.std(spread))
