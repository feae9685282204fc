"""benchmarks/device.py, the prepared accelerator benchmark: its FLOP count against XLA's, its
chip table, and (slow) a whole --tiny run on the CPU that writes its two files."""

import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import load_script

ROOT = pathlib.Path(__file__).resolve().parents[1]
device = load_script(ROOT / "benchmarks" / "device.py")  # it puts benchmarks/ on its own path
import bench_train  # noqa: E402  (imported by device.py from benchmarks/)


def test_peak_table_knows_the_lent_chips():
  assert device.peak_flops("NVIDIA H200")["bf16"] == pytest.approx(989.4e12)
  assert device.peak_flops("NVIDIA H100 80GB HBM3")["tf32"] == pytest.approx(494.7e12)  # SXM
  assert device.peak_flops("NVIDIA H100 PCIe")["bf16"] == pytest.approx(756e12)
  assert device.peak_flops("NVIDIA A100-SXM4-80GB")["float32"] == pytest.approx(19.5e12)
  assert device.peak_flops("AMD EPYC 7B13") is None


def test_epoch_flops_match_xla_count_of_the_steps():
  """The analytic count of a DCMH epoch is within 10% of XLA's count of the bare per-batch
  steps (which adds the elementwise work the formula leaves out)."""
  from jxhash.training import runstate

  args = bench_train.parse_args(["--n", "512", "--image-dim", "96", "--text-dim", "64", "--image-hidden", "256",
                                 "--text-hidden", "384", "--bits", "32", "--batch-size", "64"])
  spec, config, _, state, data = bench_train._jax_setup(args, bench_train.make_data(args))
  model = runstate.seed_slice(state.model, 0)

  def bare(phase, model, index, data, key):
    batch = {name: x[index] for name, x in data.items()}
    batch["index"] = index
    return phase.step(model, batch, data, key)

  xla = 0.0
  for phase in spec.stages(config, args.n)[0].phases:
    cost = jax.jit(functools.partial(bare, phase)).lower(model, np.zeros(64, np.int32), data,
                                                         jax.random.PRNGKey(0)).cost_analysis()
    xla += (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"] * (args.n // 64)
  analytic = device.epoch_flops(args.n, 64, 96, 64, 256, 384, 32, 24)
  assert 0.9 * xla <= analytic <= xla, (analytic, xla)


def test_output_paths_never_reuse_a_name(tmp_path):
  first = device.output_paths(tmp_path, {"chip": "NVIDIA H200"})
  assert first[0].name.endswith("-nvidia-h200.json") and first[1].suffix == ".md"
  first[1].write_text("someone's report")
  second = device.output_paths(tmp_path, {"chip": "NVIDIA H200"})
  assert second[0].name.endswith("-nvidia-h200-2.json")


@pytest.mark.slow
def test_tiny_run_writes_its_files_and_every_part_runs(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device.py"), "--tiny", "--out-dir", str(tmp_path)],
                        env=env, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (json_path,), (md_path,) = tmp_path.glob("*.json"), tmp_path.glob("*.md")
  result = json.loads(json_path.read_text())
  info = result["info"]
  assert {"date", "chip", "jax", "jaxlib", "torch", "python"} <= set(info) and info["tiny"] is True
  assert json_path.stem == md_path.stem and info["chip"] in md_path.read_text()
  parts = result["parts"]
  assert {p: parts[p]["status"] for p in parts} == dict.fromkeys(device.PARTS, "ok"), {
      p: (parts[p].get("error"), parts[p].get("log_tail", "")[-800:]) for p in parts}
  rows = {(p, r["what"]): r for p, part in parts.items() for r in part["rows"]}
  # float32 training rows run on the CPU; the GPU-only precisions are skipped, not failed
  assert rows["dcmh", "jxhash float32"]["epochs_per_s"] > 0 and rows["dcmh", "torch float32"]["epochs_per_s"] > 0
  assert rows["dcmh", "jxhash bf16"]["status"] == "skipped"
  from jxhash import methods
  for name in methods.METHODS:
    assert rows["methods", f"{name} x1"]["median_s"] > 0 and rows["methods", f"{name} x2"]["seeds"] == 2
  checks = [r for (p, _), r in rows.items() if p == "eval" and r["what"].endswith("agreement")]
  assert len(checks) == 4 and all(r["status"] == "ok" and len(r["values"]) == 3 for r in checks)
  assert all(r["max_abs_diff"] <= 1e-6 for r in checks)
  assert any("mih vs flat scan" in what for p, what in rows if p == "index")
  assert "| part | row | status |" in md_path.read_text() and md_path.read_text() in proc.stdout
