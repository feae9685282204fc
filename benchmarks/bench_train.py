"""Training speed of jxhash's DCMH epoch against the PyTorch port's epoch, on the CPU.

Usage (from the repository root, venv active, torch installed: `pip install torch==2.13.0`,
the CPU wheel):

  python benchmarks/bench_train.py                      # MIRFlickr-sized DCMH, 3 timed epochs
  python benchmarks/bench_train.py --epochs 2 --warmup 1
  python benchmarks/bench_train.py --small              # a quick smoke run (tiny sizes)
  python benchmarks/bench_train.py --parts scan,step    # skip the PyTorch reference
  python benchmarks/bench_train.py --threads 2,1        # the reference with 2 and with 1 thread

Parts, each in its own subprocess (so that each peak RSS is its own and no two parts compete
for the cores), run one after another on the same synthetic arrays:

  torch  the PyTorch reference epoch (`torch_dcmh_reference.py`), torch.set_num_threads(2);
         `--threads 2,1` adds a one-thread row (on a loaded machine two OpenMP threads can be
         far slower than one).
  scan   jxhash's trainer: `epochs.compile_epoch` (the whole epoch, both phases and B = sign(F+G),
         one jitted program of `lax.scan`s; with one seed the trainer drops the seed axis
         instead of vmapping over it) on a RunState from `runstate.init_state`. The timed epoch
         includes reading the epoch's losses back to the host, as `trainer.fit` does every epoch.
  vmap1  the same epoch vmapped over the seed axis of size 1, as the trainer ran it before it
         squeezed a single seed: XLA:CPU then computes the large weight gradients transposed
         and transposes them back in every SGD update. scan against vmap1 is what the squeeze
         gains. Built from `epochs.run_epoch`, the one-seed epoch.
  step   a bare jitted single step per batch, called from Python: the same `Phase.step`,
         the batch gathered inside the jit from a host-drawn index, state donated, then a
         jitted B update. Its time per step is what a step costs with ordinary per-batch
         dispatch; the trainer's time per step against it bounds the trainer's host overhead.

Sizes (defaults = MIRFlickr-25K with DCMH's networks): n = 10000 training pairs, 4096-d
image features, 1386-d BoW, 24-d multi-hot labels, 64 bits, batch 128, image net 4096 ->
4096 -> K, text net 1386 -> 8192 -> K. Features are random (fc7-like non-negative image
features, ~1% dense 0/1 text); the speed does not depend on their values.

Reported: compile time (lower + compile, separate), epoch time (median and min over the
timed epochs, after --warmup untimed ones), training pairs per second (n // bs · bs pairs per
epoch, each through both nets), jxhash/torch throughput ratio (target >= 1.3), the trainer's
host overhead against the bare step (target < 5%), peak RSS, and the load average.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
PARTS = ("torch", "scan", "vmap1", "step")


# ---------------------------------------------------------------------------------- setup

def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--n", type=int, default=10000, help="training pairs")
  p.add_argument("--bits", type=int, default=64)
  p.add_argument("--epochs", type=int, default=3, help="timed epochs per part")
  p.add_argument("--warmup", type=int, default=1, help="untimed epochs per part before the timed ones")
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--image-dim", type=int, default=4096)
  p.add_argument("--text-dim", type=int, default=1386)
  p.add_argument("--num-labels", type=int, default=24)
  p.add_argument("--image-hidden", type=int, default=4096)
  p.add_argument("--text-hidden", type=int, default=8192)
  p.add_argument("--threads", default="2",
                 help="torch intra-op threads; a comma list (2,1) runs the reference once per count")
  p.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
  p.add_argument("--small", action="store_true",
                 help="smoke sizes: n 1024, dims 512/256, hidden 256/512, 16 bits, 1 timed epoch")
  p.add_argument("--json", help="also write the results to this file")
  p.add_argument("--worker", choices=PARTS, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.small:
    args.n, args.bits, args.epochs = 1024, 16, 1
    args.image_dim, args.text_dim, args.image_hidden, args.text_hidden = 512, 256, 256, 512
  args.parts = [s for s in args.parts.split(",") if s]
  args.threads = [int(t) for t in args.threads.split(",") if t]
  unknown = set(args.parts) - set(PARTS)
  if unknown:
    p.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
  return args


def make_data(args) -> dict:
  """The same seeded float32 arrays for every part: image, text, labels (24-d multi-hot)."""
  rng = np.random.default_rng(0)
  n = args.n
  image = np.maximum(rng.standard_normal((n, args.image_dim), np.float32), 0)  # post-ReLU fc7-like
  text = (rng.random((n, args.text_dim), np.float32) < 0.01).astype(np.float32)
  labels = np.zeros((n, args.num_labels), np.float32)
  for _ in range(3):  # 1-3 labels per item
    labels[np.arange(n), rng.integers(0, args.num_labels, n)] = 1
  return {"image": image, "text": text, "labels": labels}


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_epochs(run_epoch, args) -> list[float]:
  """Run --warmup untimed then --epochs timed epochs; seconds of each timed one."""
  for _ in range(args.warmup):
    run_epoch()
  times = []
  for _ in range(args.epochs):
    start = time.perf_counter()
    run_epoch()
    times.append(time.perf_counter() - start)
  return times


# ---------------------------------------------------------------------------------- parts

def run_torch(args, arrays) -> dict:
  sys.path.insert(0, str(HERE))
  import torch
  import torch_dcmh_reference

  ref = torch_dcmh_reference.DCMHReference(
      arrays["image"], arrays["text"], arrays["labels"], bits=args.bits, image_hidden=args.image_hidden,
      text_hidden=args.text_hidden, batch_size=args.batch_size, threads=args.threads[-1],
      # benchmarks/device.py sets these two (a GPU, bf16 autocast); the CLI runs on the CPU
      device=getattr(args, "torch_device", "cpu"), autocast=getattr(args, "torch_autocast", None))
  logs = {}

  def run_epoch():
    logs.update(ref.epoch())

  times = timed_epochs(run_epoch, args)
  return {"times": times, "steps": ref.steps, "compile_s": None, "loss": logs,
          "version": f"torch {torch.__version__}, {torch.get_num_threads()} threads"}


def _jax_setup(args, arrays):
  """DCMH spec, config, the single-seed RunState and the arrays, placed on the mesh."""
  import jax.numpy as jnp
  from jxhash import methods
  from jxhash import distributed
  from jxhash.training import runstate
  from jxhash.spec import Dims

  spec = methods.get_method("dcmh")
  # epochs only sets the lr schedule's length; the speed does not depend on it
  config = spec.Config(bits=args.bits, epochs=args.warmup + args.epochs, batch_size=args.batch_size,
                       image_hidden=(args.image_hidden,), text_hidden=(args.text_hidden,))
  dims = Dims(image_shape=(args.image_dim,), text_dim=args.text_dim, num_labels=args.num_labels)
  mesh = distributed.make_mesh()
  state = distributed.replicate(runstate.init_state(spec, config, dims, args.n, seed=0), mesh)
  data = distributed.replicate({k: jnp.asarray(v) for k, v in arrays.items()}, mesh)
  return spec, config, mesh, state, data


def trainer_epoch(stage, mesh):
  """The trainer's jitted epoch, `epochs.compile_epoch`, for an epoch that is not a stage's last."""
  from jxhash.training import epochs

  return epochs.compile_epoch(stage, mesh)


# bench_seeds.py times sequential seeds with this name; the trainer squeezes a single seed itself
# now, so it is the trainer's epoch.
compile_epoch_squeezed = trainer_epoch


def compile_epoch_vmapped(stage, mesh):
  """The trainer's epoch vmapped over the seed axis even for one seed (the `vmap1` part).

  Built from `epochs.run_epoch`, the one-seed epoch the trainer compiles.
  """
  import jax
  from jxhash.training import epochs
  from jxhash.data import augment

  one_seed = functools.partial(epochs.run_epoch, stage=stage, mesh=mesh, aug=augment.Augment())

  def run(state, data):
    model, logs = jax.vmap(one_seed, in_axes=(0, 0, None, None))(state.model, state.rng, state.epoch, data)
    return state.replace(model=model, epoch=state.epoch + 1), logs

  return jax.jit(run, donate_argnums=0)


def run_scan(args, arrays, *, vmap: bool = False) -> dict:
  import jax

  spec, config, mesh, state, data = _jax_setup(args, arrays)
  stage = spec.stages(config, args.n)[0]
  start = time.perf_counter()
  epoch_fn = compile_epoch_vmapped(stage, mesh) if vmap else trainer_epoch(stage, mesh)
  epoch_fn = epoch_fn.lower(state, data).compile()
  compile_s = time.perf_counter() - start
  box = {"state": state, "logs": {}}

  def run_epoch():
    box["state"], logs = epoch_fn(box["state"], data)
    # fit reads every epoch's losses back (divergence check); that sync ends the epoch
    box["logs"] = {k: float(np.asarray(v).mean()) for k, v in logs.items()}
    jax.block_until_ready(box["state"])

  times = timed_epochs(run_epoch, args)
  steps = max(1, args.n // min(args.batch_size, args.n))
  return {"times": times, "steps": steps, "compile_s": compile_s, "loss": box["logs"],
          "version": f"jax {jax.__version__}, {jax.devices()[0].platform}"}


def run_step(args, arrays) -> dict:
  import jax
  from jxhash.training import runstate

  spec, config, mesh, state, data = _jax_setup(args, arrays)
  stage = spec.stages(config, args.n)[0]
  model = runstate.seed_slice(state.model, 0)  # one model, no seed axis: an ordinary training loop
  bs = min(args.batch_size, args.n)
  steps = max(1, args.n // bs)

  def bare(phase, model, index, data, key):
    batch = {name: x[index] for name, x in data.items()}
    batch["index"] = index
    return phase.step(model, batch, data, key)

  start = time.perf_counter()
  example_index, example_key = np.zeros(bs, np.int32), np.asarray(jax.random.PRNGKey(0))
  step_fns = [jax.jit(functools.partial(bare, phase), donate_argnums=0)
              .lower(model, example_index, data, example_key).compile() for phase in stage.phases]
  update_fn = jax.jit(stage.end_of_epoch, donate_argnums=0).lower(model, data).compile()
  compile_s = time.perf_counter() - start
  rng = np.random.default_rng(0)
  box = {"model": model, "logs": {}}

  def run_epoch():
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(rng.integers(1 << 31)), steps))
    logs = {}
    for phase, step_fn in zip(stage.phases, step_fns):
      # one permutation per phase, as the trainer draws them; each step sends its index row
      batches = rng.permutation(args.n)[:steps * bs].reshape(steps, bs).astype(np.int32)
      losses = []
      for i in range(steps):
        box["model"], metrics = step_fn(box["model"], batches[i], data, keys[i])
        losses.append(metrics["loss"])
      logs[f"{phase.name}/loss"] = losses
    box["model"] = update_fn(box["model"], data)
    box["logs"] = {k: float(np.mean([np.asarray(v) for v in vs])) for k, vs in logs.items()}
    jax.block_until_ready(box["model"])

  times = timed_epochs(run_epoch, args)
  return {"times": times, "steps": steps, "compile_s": compile_s, "loss": box["logs"],
          "version": f"jax {jax.__version__}, {jax.devices()[0].platform}"}


def worker(args) -> dict:
  arrays = make_data(args)
  load_before = os.getloadavg()
  parts = {"torch": run_torch, "scan": run_scan, "vmap1": functools.partial(run_scan, vmap=True),
           "step": run_step}
  result = parts[args.worker](args, arrays)
  result.update(part=args.worker, peak_rss_mib=peak_rss_mib(), load_before=load_before,
                load_after=os.getloadavg())
  return result


# ---------------------------------------------------------------------------------- report

def spawn(part: str, argv: list[str]) -> dict:
  out = subprocess.run([sys.executable, __file__, *argv, "--worker", part], capture_output=True, text=True)
  if out.returncode:
    sys.stderr.write(out.stdout + out.stderr)
    raise SystemExit(f"part {part} failed (exit {out.returncode})")
  return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(r: dict, args) -> dict:
  """Derived figures of one part: median/min epoch, per-step time, pairs per second."""
  median, best = statistics.median(r["times"]), min(r["times"])
  bs = min(args.batch_size, args.n)
  return dict(r, median_s=median, min_s=best, per_step_ms=1000 * median / (2 * r["steps"]),
              pairs_per_s=r["steps"] * bs / median)


def report(results: dict, args) -> str:
  """The table and the ratios; `results` maps row names ("torch-2t", "scan", ...) to summaries."""
  lines = [f"DCMH epoch, n={args.n}, {args.image_dim}->{args.image_hidden}->{args.bits} image, "
           f"{args.text_dim}->{args.text_hidden}->{args.bits} text, batch {args.batch_size}, "
           f"{args.epochs} timed epochs after {args.warmup} warm-up; {os.cpu_count()} CPUs",
           "",
           f"{'part':<9}{'compile s':>10}{'epoch s (med)':>15}{'min s':>8}{'ms/step':>9}"
           f"{'pairs/s':>9}{'peak RSS MiB':>14}  load avg (1 min) before/after"]
  for name, r in results.items():
    compile_s = "-" if r["compile_s"] is None else f"{r['compile_s']:.2f}"
    lines.append(f"{name:<9}{compile_s:>10}{r['median_s']:>15.2f}{r['min_s']:>8.2f}{r['per_step_ms']:>9.1f}"
                 f"{r['pairs_per_s']:>9.0f}{r['peak_rss_mib']:>14.0f}  "
                 f"{r['load_before'][0]:.2f} / {r['load_after'][0]:.2f}")
  lines.append("")
  for ref in [name for name in results if name.startswith("torch")]:
    for part in ("scan", "vmap1", "step"):
      if part in results:
        ratio = results[ref]["median_s"] / results[part]["median_s"]
        best = results[ref]["min_s"] / results[part]["min_s"]
        lines.append(f"throughput {part}/{ref}: {ratio:.2f}x (median), {best:.2f}x (min)"
                     + ("   target >= 1.3x" if part == "scan" else ""))
  if "scan" in results and "vmap1" in results:
    gain = results["vmap1"]["median_s"] / results["scan"]["median_s"]
    lines.append(f"vmap1/scan epoch time: {gain:.2f}x (median): the cost of vmapping one seed")
  for part in ("scan", "vmap1"):
    if part in results and "step" in results:
      mine, step = results[part]["per_step_ms"], results["step"]["per_step_ms"]
      # the bare step's time includes its own dispatch, so this bounds the epoch's host overhead from above
      lines.append(f"host overhead of {part} vs bare step: {100 * (mine - step) / mine:+.1f}% "
                   f"({mine:.1f} vs {step:.1f} ms/step; target < 5%; negative: faster than the bare step)")
  lines.append("losses (mean over the last epoch): " + "; ".join(
      f"{name} " + ", ".join(f"{k} {v:.4g}" for k, v in r["loss"].items()) for name, r in results.items()))
  lines.append("versions: " + "; ".join(f"{name}: {r['version']}" for name, r in results.items()))
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  if args.worker:
    print(json.dumps(worker(args)))
    return
  argv = list(sys.argv[1:] if argv is None else argv)
  results = {}
  for part in PARTS:
    if part not in args.parts:
      continue
    # one torch row per thread count; a later --threads overrides the first for the worker
    runs = [(f"torch-{t}t", ["--threads", str(t)]) for t in args.threads] if part == "torch" else [(part, [])]
    for name, extra in runs:
      print(f"running {name} ...", file=sys.stderr, flush=True)
      results[name] = summarize(spawn(part, argv + extra), args)
  print(report(results, args))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
  main()
