"""Train and evaluate one method end to end; write a results JSON and orbax checkpoints.

    python experiments/run.py --method=dcmh                       # synthetic default data
    python experiments/run.py --method=dcmh --dataset=wikipedia --data-dir=../shared/data/wikipedia \
        --bits=32 --set init=fan_in --set lr=0.01
    python experiments/run.py --method=dcmh --seeds=5             # mean ± std over 5 model seeds
    python experiments/run.py --method=dcmh --dataset=mirflickr25k --data-dir=data/mirflickr \
        --data-option image=pixels --data-option stream_pixels=true --set vgg_f=imagenet-vgg-f.mat

User errors (unknown method, bad value, missing file, ...) print one line on stderr and exit
with code 2. Checkpoints go to <checkpoint-dir>/<method>/<dataset>/<bits>bits/, the results
to --out (default results/<method>-<dataset>-<bits>bits.json).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--method", default="dcmh", help="registered method (default: dcmh)")
  p.add_argument("--dataset", default="synthetic", help="dataset loader name (default: synthetic)")
  p.add_argument("--data-dir", default=None, help="folder with the dataset's files")
  p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                 help="loader option, e.g. num_val=200 or image_features=feats.npy (repeatable)")
  p.add_argument("--split", default="random", choices=("random", "dcmh"), help="split rule")
  p.add_argument("--split-seed", type=int, default=0, help="seed of the data split")
  p.add_argument("--bits", type=int, default=None, help="code length (method default: 32)")
  p.add_argument("--epochs", type=int, default=None, help="override the method's epochs")
  p.add_argument("--batch-size", type=int, default=None, help="override the method's batch size")
  p.add_argument("--seed", type=int, default=0, help="model seed (init, batch order)")
  p.add_argument("--seeds", type=int, default=1, help="train this many seeds at once (vmapped)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                 help="method config override, e.g. --set lr=0.01 (repeatable)")
  p.add_argument("--eval-every", type=int, default=10, help="validate every N epochs (0: stage ends)")
  p.add_argument("--normalize", default="standardize", choices=("standardize", "center", "none"))
  p.add_argument("--stream", default=None, action=argparse.BooleanOptionalAction,
                 help="read image batches from the host each step (default: when the images are on disk)")
  p.add_argument("--prefetch", type=int, default=2, help="batches read ahead when streaming")
  p.add_argument("--augment", default="none", help="pixel augmentation: none, flip, shift:P or flip+shift:P")
  p.add_argument("--out", default=None, help="results JSON path")
  p.add_argument("--checkpoint-dir", default=str(ROOT / "checkpoints"), help="checkpoint root")
  p.add_argument("--no-checkpoint", action="store_true", help="write no checkpoints")
  p.add_argument("--resume", action="store_true", help="continue the run found in the checkpoint dir")
  p.add_argument("--overwrite", action="store_true", help="replace results/checkpoints of a different run")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--coordinator", default=None, help="multi-host: coordinator host:port")
  p.add_argument("--num-processes", type=int, default=None, help="multi-host: number of hosts")
  p.add_argument("--process-id", type=int, default=None, help="multi-host: this host's index")
  return p.parse_args(argv)


def _options(dataset, pairs):
  from jxhash import data as data_lib
  return data_lib.parse_options(dataset, pairs)


def run(args) -> dict:
  import jax

  from jxhash import checkpoint, config as config_lib, data as data_lib, parallel, results, train
  from jxhash.errors import UserError
  from jxhash.identity import run_identity
  from jxhash.methods import get_method

  if args.coordinator:
    parallel.initialize_distributed(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                    process_id=args.process_id)
  spec = get_method(args.method)
  config = config_lib.apply_overrides(spec.Config(), args.overrides)
  for flag, field in (("bits", "bits"), ("epochs", "epochs"), ("batch_size", "batch_size")):
    if getattr(args, flag) is not None:
      config = config_lib.apply_overrides(config, [f"{field}={getattr(args, flag)}"])
  config_lib.check_positive(config)
  if args.seeds < 1:
    raise UserError(f"--seeds must be >= 1, got {args.seeds}")
  if args.prefetch < 1:
    raise UserError(f"--prefetch must be >= 1, got {args.prefetch}")
  if args.data_dir is not None and not pathlib.Path(args.data_dir).is_dir():
    raise UserError(f"--data-dir {args.data_dir} is not a directory")

  data = data_lib.load(args.dataset, args.data_dir, split=args.split, seed=args.split_seed,
                       **_options(args.dataset, args.data_option))
  options = train.TrainOptions(seed=args.seed, num_seeds=args.seeds, eval_every=args.eval_every,
                               normalize=args.normalize, resume=args.resume, progress=not args.no_progress,
                               stream=args.stream, prefetch=args.prefetch, augment=args.augment)
  out = pathlib.Path(args.out or ROOT / "results" / f"{spec.name}-{data.name}-{config.bits}bits.json")
  results.check_writable(out, run_identity(spec, config, data, options), overwrite=args.overwrite)
  store = None
  if not args.no_checkpoint:
    run_dir = checkpoint.default_run_dir(args.checkpoint_dir, spec.name, data.name, config.bits)
    store = checkpoint.CheckpointStore.open(run_dir, checkpoint.run_metadata(spec, config, data, options),
                                            resume=args.resume, overwrite=args.overwrite)
  print(f"{spec.name} on {data.name}: {config.bits} bits, splits {data.sizes()}, "
        f"{options.num_seeds} seed(s), devices {jax.devices()}")
  fit = train.fit(spec, config, data, options, store=store)
  res = results.build(spec, config, data, options, fit,
                      extra={"checkpoint": str(store.directory) if store else None})
  results.write(out, res)
  std = res.get("map_std", {"i2t": None, "t2i": None})
  for d, name in (("i2t", "image->text"), ("t2i", "text->image")):
    spread = f" ± {std[d]:.4f}" if std[d] is not None else ""
    print(f"  mAP@all {name}: {res['map'][d]:.4f}{spread}")
  print(f"  model: {fit.selected}; train time {fit.train_time:.1f} s; results: {out}"
        + (f"; checkpoint: {store.directory}" if store else ""))
  return res


def main(argv=None) -> int:
  sys.path.insert(0, str(ROOT))
  args = parse_args(argv)
  # the trainer reports through logging (jxhash.train); the console shows its messages plainly
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter("%(message)s"))
  logger = logging.getLogger("jxhash")
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  from jxhash.errors import exit_code
  try:
    return exit_code(run, args)
  finally:
    logger.removeHandler(handler)


if __name__ == "__main__":
  sys.exit(main())
