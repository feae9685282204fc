"""Seeds trained as one vmapped program against the same seeds trained one after another.

Usage (from the repository root, venv active):

  python benchmarks/bench_seeds.py                       # S = 1, 4, 16; 5 timed epochs
  python benchmarks/bench_seeds.py --seeds 1,4 --epochs 2
  python benchmarks/bench_seeds.py --small               # a quick smoke run

For each S: the vmapped run is `runstate.init_state(num_seeds=S)` + `epochs.compile_epoch` (one
program trains all S models per epoch); the sequential run trains the same S models (seed i
sliced out, leading axis kept) one after the other with the one compiled single-seed epoch,
the way S separate runs would. Each state runs --warmup untimed epochs first, then
--epochs timed ones, each epoch timed on its own. Reported per S: milliseconds per
seed-epoch (vmapped: epoch time / S; sequential: the single-seed epoch time), as the median
over epochs and, in brackets, the minimum (on a shared machine the minimum is the better
estimate of the uncontended cost), and sequential / vmapped (> 1: vmapping is faster).
A last column runs the sequential seeds with `bench_train.compile_epoch_squeezed` (one seed
without vmap, the trainer change TRAIN.md recommends). Compile time is printed separately.

Model: DCMH with small networks (default image and text hidden width 512, 32 bits, batch
128) on `data.load("synthetic", num_items=3000, num_train=2000)` (128-d image, 64-d text,
10 labels), standardised as `trainer.fit` does.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import sys

import jax
import jax.numpy as jnp
import numpy as np

from jxhash import data as jdata, methods
from jxhash.training import inputs
from jxhash import distributed
from jxhash.training import runstate
from jxhash.spec import Dims

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402  (the trainer's epoch and the squeezed single-seed epoch)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--seeds", default="1,4,16", help="comma-separated numbers of seeds")
  p.add_argument("--num-items", type=int, default=3000)
  p.add_argument("--num-train", type=int, default=2000)
  p.add_argument("--hidden", type=int, default=512, help="image and text hidden width")
  p.add_argument("--bits", type=int, default=32)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--epochs", type=int, default=5, help="timed epochs per state")
  p.add_argument("--warmup", type=int, default=1, help="untimed epochs per state first")
  p.add_argument("--small", action="store_true", help="smoke sizes: seeds 1,2, 600 items, width 64, 1 epoch")
  args = p.parse_args(argv)
  if args.small:
    args.seeds, args.num_items, args.num_train, args.hidden, args.epochs = "1,2", 600, 400, 64, 1
  args.seeds = [int(s) for s in args.seeds.split(",")]
  return args


def run_epochs(epoch_fn, state, arrays, count: int):
  """`count` epochs; returns (state, [seconds of each]). Each epoch ends with its losses read
  back to the host, as `trainer.fit` does."""
  times = []
  for _ in range(count):
    start = time.perf_counter()
    state, logs = epoch_fn(state, arrays)
    jax.tree.map(np.asarray, logs)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - start)
  return state, times


def main(argv=None):
  args = parse_args(argv)
  spec = methods.get_method("dcmh")
  ds = jdata.load("synthetic", num_items=args.num_items, num_train=args.num_train)
  stats = inputs.fit_normalizer(ds, "standardize")
  config = spec.Config(bits=args.bits, epochs=args.warmup + args.epochs, batch_size=args.batch_size,
                       image_hidden=(args.hidden,), text_hidden=(args.hidden,))
  num_train = int(ds.train.size)
  mesh = distributed.make_mesh()
  arrays = distributed.replicate({k: jnp.asarray(v) for k, v in inputs.training_arrays(ds, stats, supervised=spec.supervised).items()}, mesh)
  stage = spec.stages(config, num_train)[0]

  # Every state below is sliced from this one. A fresh init_state builds new optimizer
  # closures, which are static pytree metadata: a compiled epoch would refuse such a state
  # (and jax.jit would recompile for it), so separately built states cannot share programs.
  # Kept on the host so that each slice is a fresh device copy the donating epoch may consume.
  master = jax.device_get(runstate.init_state(spec, config, Dims.of(ds), num_train, seed=0, num_seeds=max(args.seeds)))

  def seeds(lo, hi):
    """Seeds lo..hi-1 of the master state as their own state on the mesh."""
    part = master.replace(model=jax.tree.map(lambda x: x[lo:hi], master.model), rng=master.rng[lo:hi],
                          epoch=jnp.zeros((), jnp.int32))
    return distributed.replicate(part, mesh)

  def compiled_for(num_seeds, *, squeeze=False):
    start = time.perf_counter()
    fn = (bench_train.compile_epoch_squeezed(stage, mesh) if squeeze
          else bench_train.trainer_epoch(stage, mesh))
    fn = fn.lower(seeds(0, num_seeds), arrays).compile()
    return fn, time.perf_counter() - start

  def sequential(epoch_fn, num_seeds):
    """Epoch times of seeds 0..S-1 trained one after another, pooled."""
    times = []
    for seed in range(num_seeds):
      state, _ = run_epochs(epoch_fn, seeds(seed, seed + 1), arrays, args.warmup)
      times += run_epochs(epoch_fn, state, arrays, args.epochs)[1]
    return times

  print(f"DCMH, synthetic n_train={num_train} ({ds.image.shape[1]}-d image, {ds.text.shape[1]}-d text), "
        f"hidden {args.hidden}, {args.bits} bits, batch {args.batch_size}; {args.warmup} warm-up + "
        f"{args.epochs} timed epochs per state; {os.cpu_count()} CPUs; load avg {os.getloadavg()[0]:.2f}")
  single, single_compile = compiled_for(1)
  squeezed, squeezed_compile = compiled_for(1, squeeze=True)
  print(f"single-seed epoch compile: {single_compile:.2f} s (trainer), {squeezed_compile:.2f} s (squeezed)")
  print("ms per seed-epoch, median over epochs (min in brackets); seq/vmap > 1: the vmapped program is faster")
  print(f"{'S':>3}{'compile s':>11}{'vmapped':>18}{'sequential':>18}{'seq/vmap':>16}"
        f"{'seq. squeezed':>18}{'load avg':>10}")

  def cell(times, per):
    return f"{1000 * np.median(times) / per:.1f} ({1000 * min(times) / per:.1f})"

  for num_seeds in args.seeds:
    vmapped, compile_s = compiled_for(num_seeds) if num_seeds > 1 else (single, single_compile)
    state, _ = run_epochs(vmapped, seeds(0, num_seeds), arrays, args.warmup)
    vmap_t = run_epochs(vmapped, state, arrays, args.epochs)[1]
    seq_t = sequential(single, num_seeds)
    squeezed_t = sequential(squeezed, num_seeds)
    ratio = f"{np.median(seq_t) * num_seeds / np.median(vmap_t):.2f} ({min(seq_t) * num_seeds / min(vmap_t):.2f})"
    print(f"{num_seeds:>3}{compile_s:>11.2f}{cell(vmap_t, num_seeds):>18}{cell(seq_t, 1):>18}{ratio:>16}"
          f"{cell(squeezed_t, 1):>18}{os.getloadavg()[0]:>10.2f}", flush=True)
  print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
  main()
