"""A CNN-F DCMH epoch on MIRFlickr-sized pixels: images streamed from the host against held on device.

Usage (from the repository root, venv active):

  python benchmarks/bench_pixels.py                            # 10,000 × 224×224×3, full VGG-F
  python benchmarks/bench_pixels.py --dtype bfloat16           # CNN in bf16 (GPUs, TPUs)
  python benchmarks/bench_pixels.py --num-train 512 --tiny     # CPU-sized smoke run

Data: `data.load("synthetic", image_size=224, num_labels=24)`: label-driven images made on
demand (a lazy row source, so the host holds no 3 GB stack), MIRFlickr's 10,000 training
items and 24 labels. Model: DCMH with CNN-F (VGG-F widths, or `--tiny` widths 6/8/8/8/8, fc
16) and its 8192-wide text net, 64 bits, batch 128. One epoch = the image phase (CNN-F
forward and backward over every training image) then the text phase then B = sign(F + G).

Measured, each after one untimed epoch (compilation):
  streamed: `trainer.StreamedEpoch`, the trainer's path for image stacks on disk: each batch's
    rows read on the host, copied to the device and trained on, `--prefetch` batches ahead on
    a background thread;
  resident: `epochs.compile_epoch`, the whole training image array already on the device and
    the epoch one scanned program: no host work at all, the reference.
The ratio streamed / resident is the cost of streaming (1.0: the reads and copies are fully
hidden behind compute). The resident run needs the images on the device (1.5 GB at the default
size); `--skip-resident` leaves it out. Also printed: images per second and the host's time to
produce one batch (read + normalise), which bounds the streamed rate from below.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from jxhash import data as jdata
from jxhash.training import epochs
from jxhash.training import inputs
from jxhash.training import runstate

from jxhash.spec import Dims
from jxhash import methods
from jxhash import distributed
from jxhash.training import trainer
from jxhash.data import augment


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--num-train", type=int, default=10000)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--bits", type=int, default=64)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--tiny", action="store_true", help="tiny CNN-F widths (CPU smoke runs)")
  p.add_argument("--prefetch", type=int, default=4)
  p.add_argument("--epochs", type=int, default=2, help="timed epochs per path")
  p.add_argument("--skip-resident", action="store_true")
  return p.parse_args(argv)


def time_epochs(epoch_fn, state, arrays, epochs):
  state, _ = epoch_fn(state, arrays)  # compile
  jax.block_until_ready(state)
  times = []
  for _ in range(epochs):
    t = time.perf_counter()
    state, logs = epoch_fn(state, arrays)
    jax.block_until_ready((state, logs))
    times.append(time.perf_counter() - t)
  return state, times


def main(argv=None):
  args = parse_args(argv)
  num_items = args.num_train + 2000 + 100
  ds = jdata.load("synthetic", image_size=224, num_labels=24, text_dim=1386, num_items=num_items,
                  num_query=2000, num_train=args.num_train, num_val=100)
  spec = methods.get_method("dcmh")
  cnn = {"cnn_channels": (6, 8, 8, 8, 8), "cnn_fc_width": 16} if args.tiny else {}
  config = dataclasses.replace(spec.Config(), bits=args.bits, batch_size=args.batch_size, epochs=100,
                               cnn_dtype=args.dtype, **cnn)
  stage = spec.stages(config, args.num_train)[0]
  mesh = distributed.make_mesh()
  stats = inputs.fit_normalizer(ds, "standardize")
  print(f"devices: {jax.devices()}; {args.num_train} × 224×224×3 train images, batch {args.batch_size}, "
        f"CNN-F {'tiny' if args.tiny else 'VGG-F'} {args.dtype}, {args.bits} bits")

  images = jdata.core.take_rows(ds.image, ds.train)
  t = time.perf_counter()
  for i in range(3):
    images[np.arange(i * args.batch_size, (i + 1) * args.batch_size) % args.num_train]
  host_batch = (time.perf_counter() - t) / 3
  print(f"host: one batch read in {host_batch * 1e3:.1f} ms ({args.batch_size / host_batch:.0f} images/s)")

  def fresh_state():
    state = runstate.init_state(spec, config, Dims.of(ds), args.num_train)
    return distributed.replicate(state, mesh)

  results = {}
  arrays = distributed.replicate({k: jnp.asarray(v) for k, v in
                               inputs.training_arrays(ds, stats, supervised=spec.supervised, image=False).items()}, mesh)
  streamed = trainer.StreamedEpoch(stage, mesh, augment.Augment(), images, lambda x: x, args.prefetch)
  _, results["streamed"] = time_epochs(streamed, fresh_state(), arrays, args.epochs)
  if not args.skip_resident:
    arrays = dict(arrays, image=distributed.replicate(jnp.asarray(images[np.arange(args.num_train)]), mesh))
    _, results["resident"] = time_epochs(epochs.compile_epoch(stage, mesh), fresh_state(), arrays, args.epochs)

  for name, times in results.items():
    best = min(times)
    print(f"{name:>9}: epoch {np.median(times):.2f} s median, {best:.2f} s min "
          f"({args.num_train / best:.0f} images/s)")
  if "resident" in results:
    print(f"streamed / resident: {min(results['streamed']) / min(results['resident']):.2f} (min epochs)")


if __name__ == "__main__":
  main()
