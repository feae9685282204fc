"""The one prepared benchmark for a lent accelerator: training, evaluation and index search in
one run of under 8 minutes on an H100/H200, results written as files.

Usage (from the repository root; no `pip install -e .` needed):

  PYTHONPATH=. python benchmarks/device.py                 # everything, results/<date>-<chip>.*
  PYTHONPATH=. python benchmarks/device.py --parts dcmh,eval
  PYTHONPATH=. python benchmarks/device.py --tiny --out-dir /tmp/dev   # toy sizes, CPU, ~2 min

Parts, each in its own subprocess with its own time limit (a part that fails, crashes or runs
out of time is recorded as such and the others still run; inside a part every row is guarded
the same way):

  info     date, chip, Python / jax / jaxlib / torch / CUDA / numba / faiss versions, CPU cores.
  dcmh     DCMH epoch at MIRFlickr shapes (10,000 pairs, 4096-d image features, 1386-d tags,
           24 labels, 64 bits, batch 128): jxhash's scanned epoch (`bench_train.run_scan`, the
           trainer's `epochs.compile_epoch`) against the PyTorch port
           (`torch_dcmh_reference.py` via `bench_train.run_torch`) on the same GPU, in
           float32, TF32 and bf16: epochs/s and the fraction of the chip's dense peak FLOP/s
           (`epoch_flops`, counted analytically; XLA's own count of the epoch program, which
           counts a loop body once, is stored in the JSON as `xla_flops`). jxhash's precisions
           are `jax.default_matmul_precision` ("highest", "tensorfloat32", "bfloat16": bf16
           matmul operands, float32 accumulation and storage); the port's are
           `allow_tf32` off / on and `torch.autocast(bfloat16)`.
  methods  every method's training epoch (its last stage: the hashing one) at the same shapes
           with its default config and 64 bits, 1 seed and 5 seeds vmapped, through
           `bench_train.trainer_epoch` and `bench_seeds.run_epochs`.
  eval     exact mAP@all, ties "index" and "average", at NUS-WIDE scale (2,100 x 193,734,
           21 labels) and COCO scale (5,000 x 117,218, 80 labels), 64 bits: jxhash's jax
           backend on the device (codes already on it), a PyTorch per-query loop on the GPU
           (`eval_reference.torch_reference_map`), and jxhash's numba backend on all CPU
           cores. The values must agree (jax within 1e-6 of numba, torch within 1e-9).
  index    `HashIndex` search, 10M x 64-bit clustered codes, 1000 queries: multi-index hashing
           against the exhaustive scan (`bench_index.bench_mih`), all cores and 1 thread, and
           the scan against FAISS's IndexBinaryFlat when faiss is installed.

Without a GPU (or without CUDA in torch) the rows that need one (TF32, bf16, the torch rows
on "cuda") are recorded as skipped; --tiny runs the rest at toy sizes on the CPU (the test in
tests/test_device_bench.py). Output: <out-dir>/<date>-<chip>.json (everything) and .md (the
table, as printed); an existing file is never replaced (a -2, -3 ... suffix is added).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback

# jax must not take 75% of the GPU up front: torch runs in the same processes.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# numba's and FAISS's OpenMP runtimes spin against each other otherwise (bench_index.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(HERE), str(ROOT)):
  if path not in sys.path:
    sys.path.insert(0, path)

PARTS = ("info", "dcmh", "eval", "methods", "index")
# Seconds each part may take at full sizes (3x with --tiny), and never more than what is left
# of --budget-s; index (CPU only) runs last and gets the rest.
LIMITS = {"info": 60, "dcmh": 120, "eval": 90, "methods": 150, "index": 150}

# Where a worker saves its rows after each one, so that a part stopped at its time limit keeps
# the rows it finished (set from --worker-out).
_SINK: dict = {}
PRECISIONS = ("float32", "tf32", "bf16")

# Dense peak TFLOP/s (no structured sparsity) from NVIDIA's datasheets, by chip name substring,
# most specific first. TF32 and bf16 are tensor-core figures; float32 is the CUDA-core figure.
PEAK_TFLOPS = (
    ("H100 PCIe", {"float32": 51.2, "tf32": 378.0, "bf16": 756.0}),
    ("H100 NVL", {"float32": 60.0, "tf32": 417.5, "bf16": 835.0}),
    ("H200", {"float32": 67.0, "tf32": 494.7, "bf16": 989.4}),
    ("H100", {"float32": 67.0, "tf32": 494.7, "bf16": 989.4}),  # SXM (e.g. "H100 80GB HBM3")
    ("A100", {"float32": 19.5, "tf32": 156.0, "bf16": 312.0}),
)


def peak_flops(chip: str) -> dict | None:
  """{precision: FLOP/s} of a known chip name (e.g. "NVIDIA H200"), else None."""
  for key, table in PEAK_TFLOPS:
    if key.lower() in chip.lower():
      return {p: v * 1e12 for p, v in table.items()}
  return None


def epoch_flops(n: int, batch: int, image_dim: int, text_dim: int, image_hidden: int, text_hidden: int,
                bits: int, labels: int) -> float:
  """Floating-point operations of one DCMH epoch (n // batch steps per phase, two phases).

  Per step of a phase with input width D and hidden width H (a multiply-add is 2 FLOPs):
  forward 2bDH + 2bHK, backward 2bDH + 4bHK (no gradient for the input), the likelihood's
  θ = F·Gᵀ against all n rows 2bKn and its gradient 2bKn, the batch's similarity row S = L_b·Lᵀ
  2bCn. Elementwise work and the B update are O(bn + nK) and left out.
  """
  def step(width, hidden):
    return 4 * batch * width * hidden + 6 * batch * hidden * bits + 4 * batch * bits * n + 2 * batch * labels * n

  steps = max(1, n // batch)
  return float(steps * (step(image_dim, image_hidden) + step(text_dim, text_hidden)))


# ---------------------------------------------------------------------------------- sizes

def sizes(tiny: bool) -> dict:
  if tiny:
    return {"train": dict(n=256, image_dim=64, text_dim=48, num_labels=24, image_hidden=64, text_hidden=96,
                          bits=16, batch_size=32, epochs=1, warmup=1),
            "seeds": (1, 2), "method_epochs": 1,
            "eval": {"nuswide": (40, 3000, 21), "coco": (50, 2000, 80)},
            "index": dict(n=20_000, batch=100, latency_queries=5, radius_queries=10)}
  return {"train": dict(n=10000, image_dim=4096, text_dim=1386, num_labels=24, image_hidden=4096, text_hidden=8192,
                        bits=64, batch_size=128, epochs=3, warmup=1),
          "seeds": (1, 5), "method_epochs": 2,
          "eval": {"nuswide": (2100, 193_734, 21), "coco": (5000, 117_218, 80)},
          "index": dict(n=10_000_000, batch=1000, latency_queries=20, radius_queries=50)}


def train_args(sz: dict):
  """bench_train's argument namespace at these sizes."""
  import bench_train
  t = sz["train"]
  return bench_train.parse_args([
      "--n", str(t["n"]), "--bits", str(t["bits"]), "--epochs", str(t["epochs"]), "--warmup", str(t["warmup"]),
      "--batch-size", str(t["batch_size"]), "--image-dim", str(t["image_dim"]), "--text-dim", str(t["text_dim"]),
      "--num-labels", str(t["num_labels"]), "--image-hidden", str(t["image_hidden"]),
      "--text-hidden", str(t["text_hidden"]), "--threads", str(os.cpu_count() or 1)])


def guarded(rows: list, what: str, fn) -> None:
  """Append fn()'s row (a dict) to rows, or a failed row naming the exception."""
  start = time.perf_counter()
  try:
    row = fn()
  except BaseException as e:  # noqa: BLE001 - a failing row is recorded; the part goes on
    if isinstance(e, KeyboardInterrupt):
      raise
    row = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:500],
           "traceback": traceback.format_exc()[-2000:]}
  row.setdefault("status", "ok")
  row.update(what=what, seconds=round(time.perf_counter() - start, 2))
  rows.append(row)
  if _SINK.get("path"):
    _save(_SINK["path"], {"rows": rows, "status": "failed", "error": "stopped before its end"})
  print(f"  {what}: {row['status']} {row.get('error', '')}", file=sys.stderr, flush=True)


def skipped(rows: list, what: str, reason: str) -> None:
  rows.append({"what": what, "status": "skipped", "reason": reason})


def torch_cuda() -> bool:
  try:
    import torch
  except ImportError:
    return False
  return torch.cuda.is_available()


def on_gpu() -> bool:
  import jax
  return jax.default_backend() == "gpu"


def chip_name() -> str:
  import jax
  device = jax.devices()[0]
  if device.platform != "cpu":
    return device.device_kind
  return next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
              platform.processor() or "cpu")


# ---------------------------------------------------------------------------------- parts

def part_info(args, sz) -> dict:
  import jax
  import jaxlib
  import numpy as np
  info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
          "chip": chip_name(), "platform": jax.default_backend(), "devices": len(jax.devices()),
          "python": platform.python_version(), "numpy": np.__version__, "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "cpu_cores": os.cpu_count(), "tiny": args.tiny}
  try:
    info["xla_platform_version"] = jax.devices()[0].client.platform_version
  except Exception:  # noqa: BLE001 - informational only
    pass
  for name in ("torch", "numba", "faiss", "flax", "optax"):
    try:
      info[name] = __import__(name).__version__
    except Exception:  # noqa: BLE001 - absent packages are recorded as such
      info[name] = "absent"
  if info["torch"] != "absent":
    import torch
    info["torch_cuda"] = torch.version.cuda or "none"
    info["torch_gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
  try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20)
    if smi.returncode == 0:
      info["nvidia_smi"] = smi.stdout.strip()
  except (OSError, subprocess.SubprocessError):
    pass
  return {"info": info, "rows": []}


def part_dcmh(args, sz) -> dict:
  import jax
  import bench_train

  targs = train_args(sz)
  arrays = bench_train.make_data(targs)
  t = sz["train"]
  flops = epoch_flops(t["n"], t["batch_size"], t["image_dim"], t["text_dim"], t["image_hidden"], t["text_hidden"],
                      t["bits"], t["num_labels"])
  peak = peak_flops(chip_name())
  gpu, cuda = on_gpu(), torch_cuda()
  rows = []
  extra = {"epoch_flops": flops, "peak_flops": peak}

  def finish(result, precision):
    s = bench_train.summarize(result, targs)
    row = {"median_s": s["median_s"], "min_s": s["min_s"], "epochs_per_s": 1 / s["median_s"],
           "compile_s": s["compile_s"], "pairs_per_s": s["pairs_per_s"], "loss": s["loss"], "version": s["version"]}
    if peak:
      row["peak_fraction"] = flops / s["median_s"] / peak[precision]
    return row

  jax_precision = {"float32": "highest", "tf32": "tensorfloat32", "bf16": "bfloat16"}
  for precision in PRECISIONS:
    if precision != "float32" and not gpu:
      skipped(rows, f"jxhash {precision}", "needs a GPU")
      continue

    def jx(precision=precision):
      with jax.default_matmul_precision(jax_precision[precision]):
        row = finish(bench_train.run_scan(targs, arrays), precision)
        if precision == "float32":  # XLA's count (a scanned loop's body counted once)
          spec, config, mesh, state, data = bench_train._jax_setup(targs, arrays)
          cost = bench_train.trainer_epoch(spec.stages(config, targs.n)[0], mesh).lower(state, data).cost_analysis()
          cost = cost[0] if isinstance(cost, (list, tuple)) else cost
          extra["xla_flops"] = float(cost.get("flops", float("nan"))) if cost else None
      return row

    guarded(rows, f"jxhash {precision}", jx)
  try:
    import torch
  except ImportError:
    for precision in PRECISIONS:
      skipped(rows, f"torch {precision}", "torch is not installed")
    torch = None
  if torch is not None:
    for precision in PRECISIONS:
      if precision != "float32" and not cuda:
        skipped(rows, f"torch {precision}", "needs torch with CUDA")
        continue

      def tr(precision=precision):
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        targs.torch_device = "cuda" if cuda else "cpu"
        targs.torch_autocast = torch.bfloat16 if precision == "bf16" else None
        return finish(bench_train.run_torch(targs, arrays), precision)

      guarded(rows, f"torch {precision}", tr)
  by = {r["what"]: r for r in rows if r["status"] == "ok"}
  for precision in PRECISIONS:
    mine, ref = by.get(f"jxhash {precision}"), by.get(f"torch {precision}")
    if mine and ref:
      mine["ratio"] = ref["median_s"] / mine["median_s"]
  return {"rows": rows, **extra}


def part_methods(args, sz) -> dict:
  import jax.numpy as jnp
  import bench_seeds
  import bench_train
  from jxhash import methods
  from jxhash import distributed
  from jxhash.training import runstate
  from jxhash.spec import Dims

  deadline = time.monotonic() + args.deadline_s
  targs = train_args(sz)
  host = bench_train.make_data(targs)
  t = sz["train"]
  dims = Dims(image_shape=(t["image_dim"],), text_dim=t["text_dim"], num_labels=t["num_labels"])
  mesh = distributed.make_mesh()
  rows = []
  for name in methods.METHODS:
    spec = methods.get_method(name)
    # --tiny: the method's own smoke configuration (small widths), the `smoke` preset
    config = spec.Config(**{**(spec.smoke if args.tiny else {}), "bits": t["bits"]})
    keys = ("image", "text", "labels") if spec.supervised else ("image", "text")
    data = distributed.replicate({k: jnp.asarray(host[k]) for k in keys}, mesh)
    for seeds in sz["seeds"]:
      what = f"{name} x{seeds}"
      if time.monotonic() > deadline:
        skipped(rows, what, "time budget spent")
        continue

      def one(spec=spec, config=config, data=data, seeds=seeds):
        stage = spec.stages(config, t["n"])[-1]
        state = distributed.replicate(runstate.init_state(spec, config, dims, t["n"], seed=0, num_seeds=seeds), mesh)
        start = time.perf_counter()
        epoch = bench_train.trainer_epoch(stage, mesh).lower(state, data).compile()
        compile_s = time.perf_counter() - start
        state, _ = bench_seeds.run_epochs(epoch, state, data, 1)  # warm-up
        _, times = bench_seeds.run_epochs(epoch, state, data, sz["method_epochs"])
        median = float(sorted(times)[len(times) // 2])
        return {"stage": stage.name, "batch_size": config.batch_size, "seeds": seeds, "compile_s": compile_s,
                "median_s": median, "min_s": min(times), "seed_epochs_per_s": seeds / median}

      guarded(rows, what, one)
  by = {r["what"]: r for r in rows if r["status"] == "ok"}
  for name in methods.METHODS:
    one_seed, many = (by.get(f"{name} x{s}") for s in sz["seeds"])
    if one_seed and many:
      # > 1: the vmapped program trains S seeds faster than S single-seed epochs one by one
      many["ratio"] = many["seeds"] * one_seed["median_s"] / many["median_s"]
  return {"rows": rows}


def eval_case(shape, seed=0):
  import numpy as np
  import bench_eval
  num_q, n_db, classes = shape
  rng = np.random.default_rng(seed)
  return (bench_eval.random_codes(rng, num_q), bench_eval.random_codes(rng, n_db),
          bench_eval.synthetic_labels(rng, num_q, classes), bench_eval.synthetic_labels(rng, n_db, classes))


def part_eval(args, sz) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import eval_reference
  from jxhash import metrics
  from jxhash.metrics import ranking

  cuda = torch_cuda()
  rows = []
  warm = (np.ones((2, 64), np.int8), np.ones((5, 64), np.int8), np.ones((2, 3), np.uint8), np.ones((5, 3), np.uint8))
  have_numba = ranking.have_numba()
  if have_numba:
    for ties in ("index", "average"):  # load the compiled kernels
      metrics.mean_average_precision(*warm, ties=ties, backend="numba")
  try:
    import torch  # noqa: F401
    have_torch = True
  except ImportError:
    have_torch = False
  for case, shape in sz["eval"].items():
    host = eval_case(shape)
    device = [jax.device_put(x) for x in host]
    jax.block_until_ready(device)
    for ties in ("index", "average"):
      label = f"{case} {shape[0]}x{shape[1]} {ties}"
      values = {}

      def timed(fn):
        start = time.perf_counter()
        value = fn()
        return {"map": value, "time_s": time.perf_counter() - start}

      def numba_row(ties=ties, host=host):
        r = timed(lambda: metrics.mean_average_precision(*host, ties=ties, backend="numba"))
        values["numba"] = r["map"]
        return r

      def jax_row(ties=ties, device=device):
        start = time.perf_counter()
        metrics.mean_average_precision(*device, ties=ties, backend="jax")  # compiles
        first = time.perf_counter() - start
        r = timed(lambda: metrics.mean_average_precision(*device, ties=ties, backend="jax"))
        values["jax"] = r["map"]
        return dict(r, first_call_s=first)

      def torch_row(ties=ties, host=host):
        r = timed(lambda: eval_reference.torch_reference_map(*host, ties=ties, device="cuda" if cuda else "cpu"))
        values["torch"] = r["map"]
        return dict(r, device="cuda" if cuda else "cpu")

      if have_numba:
        guarded(rows, f"{label}: numba ({os.cpu_count()} cores)", numba_row)
      else:
        skipped(rows, f"{label}: numba", "numba is not installed")
      guarded(rows, f"{label}: jax ({jax.default_backend()})", jax_row)
      if not have_torch:
        skipped(rows, f"{label}: torch loop", "torch is not installed")
      elif not cuda and not args.tiny:
        skipped(rows, f"{label}: torch loop", "needs torch with CUDA (the CPU loop takes minutes here)")
      else:
        guarded(rows, f"{label}: torch loop ({'cuda' if cuda else 'cpu'})", torch_row)
      check = {"what": f"{label}: agreement", "values": values}
      base = values.get("numba", values.get("torch"))
      diffs = {"jax": 1e-6, "torch": 1e-9}
      bad = [k for k, tol in diffs.items() if k in values and base is not None and abs(values[k] - base) > tol]
      check["max_abs_diff"] = max((abs(v - base) for v in values.values()), default=0.0) if base is not None else None
      check["status"] = "failed" if bad else ("ok" if len(values) >= 2 else "skipped")
      if bad:
        check["error"] = f"{bad} disagree with {'numba' if 'numba' in values else 'torch'}: {values}"
      rows.append(check)
      by = {k: r for r in rows[-4:] for k in ("numba", "jax", "torch") if r["what"].startswith(f"{label}: {k}")}
      if "jax" in by and by["jax"].get("status") == "ok":
        for ref in ("numba", "torch"):
          if ref in by and by[ref].get("status") == "ok":
            by["jax"][f"ratio_{ref}"] = by[ref]["time_s"] / by["jax"]["time_s"]
    guarded(rows, f"{case}: jax work memory per (query, item)", lambda device=device: work_memory(device))
    if have_numba:
      guarded(rows, f"{case}: mAP@k and P@N, jax ({jax.default_backend()}) vs numba",
              lambda host=host, device=device: cutoffs_agree(metrics, host, device))
  return {"rows": rows}


def work_memory(device, rows: int = 256) -> dict:
  """XLA's account of the jax scans' temporary memory for a chunk of `rows` queries, in bytes
  per (query, item), against the bound `jxhash.metrics` sizes its chunks with."""
  from jxhash import metrics
  from jxhash.metrics import ranking
  q = (device[0][:rows], device[2][:rows])
  db = (device[1], device[3])
  n_db, bits, classes = device[1].shape[0], device[1].shape[1], device[3].shape[1]
  programs = {
      "index": ranking._jax_index_metrics.lower(*q, *db, rows, num_buckets=bits + 1, ks=(1000,), ns=(1000,)),
      "buckets": ranking._jax_bucket_counts.lower(*q, *db, num_buckets=bits + 1, num_classes=classes,
                                                  weighted=False),
  }
  out = {name: p.compile().memory_analysis().temp_size_in_bytes / (q[0].shape[0] * n_db)
         for name, p in programs.items()}
  out["bound"] = metrics._JAX_BYTES_PER_PAIR
  if max(out["index"], out["buckets"]) > out["bound"]:
    raise AssertionError(f"work memory per pair {out} exceeds the bound")
  return out


def cutoffs_agree(metrics, host, device) -> dict:
  """metrics.evaluate's mAP@k and P@N, both tie rules, the jax backend on the device against
  numba; a difference over 1e-6 fails the row."""
  out = {"values": {}}
  for ties in ("index", "average"):
    kw = dict(top_k=(100, 1000), pn=(1, 100, 1000), ties=ties)
    got = metrics.evaluate(*device, backend="jax", **kw)
    want = metrics.evaluate(*host, backend="numba", **kw)
    pairs = [(got["map"], want["map"]), *((got["map@k"][k], want["map@k"][k]) for k in kw["top_k"]),
             *zip(got["p@n"]["precision"], want["p@n"]["precision"])]
    diff = max(abs(a - b) for a, b in pairs)
    out["values"][ties] = {"map@k": want["map@k"], "p@n": want["p@n"]["precision"], "max_abs_diff": diff}
    if diff > 1e-6:
      raise AssertionError(f"ties={ties}: jax and numba differ by {diff:.2e}: {got} vs {want}")
  out["max_abs_diff"] = max(v["max_abs_diff"] for v in out["values"].values())
  return out


def part_index(args, sz) -> dict:
  import numpy as np
  import bench_index
  from jxhash import codes as codes_lib
  from jxhash.index import HashIndex

  s = sz["index"]
  rows = []
  start = time.perf_counter()
  words, q_words = bench_index.make_data("clustered", s["n"], 64, s["batch"], 0)
  extra = {"data_s": time.perf_counter() - start, "n": s["n"], "bits": 64, "queries": s["batch"]}
  index = HashIndex(64)
  extra["build_s"], _ = bench_index.duration(lambda: index.add_packed(words))
  q_codes = codes_lib.unpack(q_words, 64)
  extra["mih_build_s"], _ = bench_index.duration(index._tables)
  ns = argparse.Namespace(mih_k=10, k=100, repeats=1, latency_queries=s["latency_queries"],
                          radius_queries=s["radius_queries"])
  threads = sorted({os.cpu_count() or 1, 1}, reverse=True)
  for count in threads:
    guarded(rows, f"mih vs flat scan, {count} threads",
            lambda count=count: {k: (float(v) if isinstance(v, np.floating) else v)
                                 for k, v in bench_index.bench_mih(index, q_codes, ns, count).items()})
  try:
    import faiss
  except ImportError:
    skipped(rows, "flat vs FAISS IndexBinaryFlat", "faiss is not installed")
    return {"rows": rows, **extra}
  flat = bench_index.faiss_flat(faiss, words, 64)
  for count in threads[:1]:  # all cores only: the one-thread comparison is in INDEX.md
    guarded(rows, f"flat vs FAISS IndexBinaryFlat, {count} threads",
            lambda count=count: {k: (float(v) if isinstance(v, np.floating) else v) for k, v in
                                 bench_index.bench_flat(faiss, flat, index, words, q_words, q_codes, ns, count).items()})
  return {"rows": rows, **extra}


WORKERS = {"info": part_info, "dcmh": part_dcmh, "methods": part_methods, "eval": part_eval, "index": part_index}


# ---------------------------------------------------------------------------------- driver

def run_part(part: str, args, limit: float) -> dict:
  """One part in a subprocess with a time limit; its JSON, or a failed record."""
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "part.json"
    cmd = [sys.executable, __file__, "--worker", part, "--worker-out", str(out), "--deadline-s", str(max(limit - 30, 10))]
    if args.tiny:
      cmd.append("--tiny")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    start = time.perf_counter()
    print(f"running {part} (limit {limit:.0f} s) ...", file=sys.stderr, flush=True)
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env, check=False)
      status = "ok" if proc.returncode == 0 else "failed"
      log = proc.stdout + proc.stderr
      error = None if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as e:
      status, error = "failed", f"timed out after {limit:.0f} s"
      log = _text(e.stdout) + _text(e.stderr)
    try:
      result = json.loads(out.read_text())
    except (OSError, ValueError):  # no rows saved (or the part died mid-write)
      result = {"rows": []}
  result.update(status=status if result.get("status", "ok") == "ok" else result["status"],
                seconds=round(time.perf_counter() - start, 1))
  if error:
    result["error"] = error
    result["log_tail"] = log[-3000:]
  if any(r.get("status") == "failed" for r in result["rows"]):
    result["status"] = "failed"
  print(f"  {part}: {result['status']} in {result['seconds']} s {error or ''}", file=sys.stderr, flush=True)
  return result


def _text(x) -> str:
  """A subprocess stream as text (TimeoutExpired hands over bytes even with text=True)."""
  return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")


def _save(path: str, obj) -> None:
  tmp = pathlib.Path(path + ".tmp")
  tmp.write_text(json.dumps(obj, default=str))
  os.replace(tmp, path)


def _fmt(x, spec=".3g"):
  return "-" if x is None else format(x, spec)


def render(results: dict) -> str:
  """The markdown report: header lines and one table of every row."""
  info = results.get("info", {}).get("info", {})
  lines = [f"# Device benchmark {info.get('date', '?')}: {info.get('chip', '?')}", "",
           f"python {info.get('python')}, jax {info.get('jax')} / jaxlib {info.get('jaxlib')} "
           f"({info.get('platform')}, {info.get('xla_platform_version', '?')}), torch {info.get('torch')} "
           f"(CUDA {info.get('torch_cuda', '-')}), numba {info.get('numba')}, faiss {info.get('faiss')}, "
           f"{info.get('cpu_cores')} CPU cores" + (" -- TINY sizes (a smoke run, not a measurement)"
                                                    if info.get("tiny") else ""),
           "", "parts: " + ", ".join(f"{p} {r.get('status')} ({r.get('seconds')} s)" for p, r in results.items()), ""]
  dcmh = results.get("dcmh", {})
  if dcmh.get("epoch_flops"):
    lines += [f"DCMH epoch: {dcmh['epoch_flops'] / 1e12:.3f} TFLOP (analytic; XLA's count of the program "
              f"{_fmt((dcmh.get('xla_flops') or 0) / 1e12)} TFLOP, loop bodies once)", ""]
  lines += ["| part | row | status | time | result | vs reference |", "|---|---|---|---|---|---|"]
  for part, r in results.items():
    for row in r.get("rows", []):
      status = row.get("status")
      if status == "skipped":
        lines.append(f"| {part} | {row['what']} | skipped | - | {row.get('reason', '')} | - |")
        continue
      if status == "failed":
        lines.append(f"| {part} | {row['what']} | failed | - | {row.get('error', '')[:120]} | - |")
        continue
      time_s, result, ratio = "-", "", "-"
      if part == "dcmh":
        time_s = f"{row['median_s']:.3f} s/epoch"
        result = f"{row['epochs_per_s']:.2f} epochs/s, compile {_fmt(row.get('compile_s'))} s" + (
            f", {100 * row['peak_fraction']:.2f}% of peak" if "peak_fraction" in row else "")
        ratio = f"{row['ratio']:.2f}x the torch port" if "ratio" in row else "-"
      elif part == "methods":
        time_s = f"{row['median_s']:.3f} s/epoch"
        result = (f"stage {row['stage']}, batch {row['batch_size']}, {row['seed_epochs_per_s']:.2f} seed-epochs/s, "
                  f"compile {row['compile_s']:.1f} s")
        ratio = f"{row['ratio']:.2f}x sequential seeds" if "ratio" in row else "-"
      elif part == "eval":
        if "bound" in row:
          result = f"index ties {row['index']:.1f} B, average ties {row['buckets']:.1f} B (bound {row['bound']} B)"
        elif "values" in row and "index" in row["values"]:
          result = "; ".join(f"{t}: mAP@k {', '.join(f'{k} {v:.6f}' for k, v in r['map@k'].items())}, "
                             f"P@N {', '.join(f'{v:.6f}' for v in r['p@n'])}" for t, r in row["values"].items())
          ratio = f"max diff {_fmt(row.get('max_abs_diff'), '.1e')}"
        elif "values" in row:
          result = ", ".join(f"{k} {v:.9f}" for k, v in row["values"].items())
          ratio = f"max diff {_fmt(row.get('max_abs_diff'), '.1e')}"
        else:
          time_s = f"{row['time_s']:.3f} s"
          result = f"mAP {row['map']:.6f}" + (f", first call {row['first_call_s']:.2f} s" if "first_call_s" in row else "")
          ratio = ", ".join(f"{row[k]:.1f}x {k[6:]}" for k in ("ratio_numba", "ratio_torch") if k in row) or "-"
      elif part == "index":
        if "plan" in row:
          result = f"MIH {row['plan']}: {row['thr']} q/s, batch-1 {row['lat']} ms; scan {row['thr_flat']} q/s"
          ratio = f"{row['ratio']:.1f}x the scan"
        else:
          result = f"scan {row['thr']} q/s, batch-1 {row['lat']} ms; FAISS {row['thr_faiss']} q/s"
          ratio = f"{row['thr_ratio']:.2f}x FAISS"
      lines.append(f"| {part} | {row['what']} | ok | {time_s} | {result} | {ratio} |")
  return "\n".join(lines) + "\n"


def output_paths(out_dir: pathlib.Path, info: dict) -> tuple[pathlib.Path, pathlib.Path]:
  """<date>-<chip>.json/.md in out_dir, with a -2, -3 ... suffix rather than replacing a file."""
  day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
  chip = re.sub(r"[^a-z0-9]+", "-", str(info.get("chip", "unknown")).lower()).strip("-") or "unknown"
  stem, i = f"{day}-{chip}", 1
  while True:
    name = stem if i == 1 else f"{stem}-{i}"
    paths = out_dir / f"{name}.json", out_dir / f"{name}.md"
    if not any(p.exists() or p.is_symlink() for p in paths):
      return paths
    i += 1


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--tiny", action="store_true", help="toy sizes (CPU smoke run, about 2 minutes)")
  p.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
  p.add_argument("--out-dir", default=str(HERE / "results"), help="where the .json and .md go")
  p.add_argument("--budget-s", type=float, default=None,
                 help="seconds for all parts together (default 465; 1800 with --tiny, where compiling "
                      "on a shared CPU is the cost)")
  p.add_argument("--worker", choices=PARTS, help=argparse.SUPPRESS)
  p.add_argument("--worker-out", help=argparse.SUPPRESS)
  p.add_argument("--deadline-s", type=float, default=1e9, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.parts = [s for s in args.parts.split(",") if s]
  if args.budget_s is None:
    args.budget_s = 1800.0 if args.tiny else 465.0
  unknown = set(args.parts) - set(PARTS)
  if unknown:
    p.error(f"--parts: unknown {sorted(unknown)}; choose from {','.join(PARTS)}")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  sz = sizes(args.tiny)
  if args.worker:
    _SINK["path"] = args.worker_out
    result = WORKERS[args.worker](args, sz)
    _save(args.worker_out, result)
    return 0
  from jxhash import fileio
  from jxhash.errors import UserError
  try:
    out_dir = fileio.require_writable_dir(args.out_dir, what="--out-dir")
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  start = time.monotonic()
  results = {}
  parts = ["info"] + [p for p in PARTS if p in args.parts and p != "info"]
  for part in parts:
    left = args.budget_s - (time.monotonic() - start)
    limit = min(LIMITS[part] * (3 if args.tiny else 1), left)
    if limit < 20:
      results[part] = {"status": "skipped", "rows": [], "error": "time budget spent"}
      continue
    results[part] = run_part(part, args, limit)
  info = results["info"].get("info", {})
  report = render(results)
  json_path, md_path = output_paths(out_dir, info)
  fileio.atomic_write_json(json_path, {"info": info, "sizes": sz, "parts": results}, what="device results",
                           indent=1, default=str)
  fileio.atomic_write(md_path, report, what="device report")
  print(report)
  print(f"wrote {json_path} and {md_path} ({time.monotonic() - start:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
