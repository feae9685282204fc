"""Train and evaluate one method end to end; write a results JSON and orbax checkpoints.

    python experiments/run.py --method=dcmh                       # synthetic default data
    python experiments/run.py --method=dcmh --dataset=wikipedia --data-dir=../shared/data/wikipedia --bits=32
    python experiments/run.py --method=dcmh --seeds=5             # mean ± std over 5 model seeds
    python experiments/run.py --config configs/wikipedia/dcmh.py  # a config file; flags still override
    python experiments/run.py --method=dcmh --preset paper        # the published settings
    python experiments/run.py --method=dcmh --dataset=mirflickr25k --data-dir=data/mirflickr \
        --data-option image=pixels --data-option stream_pixels=true --set vgg_f=imagenet-vgg-f.mat

Every run is named from its identity (`jxhash.identity.run_name`, or `--name`): its checkpoints
go to <checkpoint-dir>/<name>/ and its results to results/<name>.json (or --out), so seed loops,
`--seeds S` after `--seeds 1` and config changes never collide, and `--resume` finds the run it
continues. Everything the user names is checked before any data is loaded or trained: bad input
prints one line on stderr and exits with code 2; Ctrl-C stops with one line and exit code 130,
keeping the last checkpoint. `JXHASH_SMOKE=1` in the environment shrinks every run to its
method's smoke configuration (tests use it to run the README's commands quickly).

Multi-process runs (docs/multiprocess.md): the same command in every process plus --coordinator
host:port --num-processes N --process-id i (or --distributed on SLURM, Open MPI, Cloud TPU), or
experiments/launch_local.py on one machine. Only process 0 writes results and run metadata. A
process that does not join within --init-timeout is named in one line (exit code 2); a process
that dies or fails stops the others, each with one line naming it (exit code 3).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import logging
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# keys a config file's get_config() may return, and the flag each one sets
CONFIG_KEYS = {"method", "dataset", "data_dir", "data_options", "split", "split_seed", "bits", "epochs",
               "batch_size", "seed", "seeds", "preset", "set", "eval_every", "normalize", "augment", "name"}


def parser():
  from jxhash.cli import ArgumentParser, int_at_least
  p = ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default=None, help="a config file (configs/<dataset>/<method>.py); flags override it")
  p.add_argument("--method", default="dcmh", help="registered method (default: dcmh)")
  p.add_argument("--preset", default=None, help="a named setting of the method, e.g. paper (see docs/methods/)")
  p.add_argument("--dataset", default="synthetic", help="dataset loader name (default: synthetic)")
  p.add_argument("--data-dir", default=None, help="folder with the dataset's files")
  p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                 help="loader option, e.g. num_val=200 or image_features=feats.npy (repeatable; docs/data.md)")
  p.add_argument("--split", default="random", choices=("random", "dcmh"), help="split rule")
  p.add_argument("--split-seed", type=int_at_least(0), default=0, help="seed of the data split")
  p.add_argument("--bits", type=int_at_least(1), default=None, help="code length (method default: 32)")
  p.add_argument("--epochs", type=int_at_least(1), default=None, help="override the method's epochs")
  p.add_argument("--batch-size", type=int_at_least(1), default=None, help="override the method's batch size")
  p.add_argument("--seed", type=int_at_least(0), default=0, help="model seed (init, batch order)")
  p.add_argument("--seeds", type=int_at_least(1), default=1, help="train this many seeds at once (vmapped)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                 help="method config override, e.g. --set lr=0.01 or --set image_hidden=64,32 (repeatable)")
  p.add_argument("--eval-every", type=int_at_least(0), default=10, help="validate every N epochs (0: stage ends)")
  p.add_argument("--normalize", default="standardize", choices=("standardize", "center", "none"))
  p.add_argument("--stream", default=None, action=argparse.BooleanOptionalAction,
                 help="read image batches from the host each step (default: when the images are pixels)")
  p.add_argument("--prefetch", type=int_at_least(1), default=2, help="batches read ahead when streaming")
  p.add_argument("--augment", default="none", help="pixel augmentation: none, flip, shift:P or flip+shift:P")
  p.add_argument("--name", default=None, help="run name (default: from the run's identity)")
  p.add_argument("--out", default=None, help="results JSON path (default: results/<run name>.json)")
  p.add_argument("--checkpoint-dir", default=str(ROOT / "checkpoints"), help="checkpoint root")
  p.add_argument("--no-checkpoint", action="store_true", help="write no checkpoints")
  p.add_argument("--resume", action="store_true", help="continue this run from its latest checkpoint")
  p.add_argument("--overwrite", action="store_true", help="replace results/checkpoints of a different run")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--tensorboard", default=None, metavar="DIR", help="write TensorBoard logs to DIR/<run name>/")
  p.add_argument("--coordinator", default=None, help="multi-process: coordinator host:port")
  p.add_argument("--num-processes", type=int_at_least(1), default=None, help="multi-process: number of processes")
  p.add_argument("--process-id", type=int_at_least(0), default=None, help="multi-process: this process's index")
  p.add_argument("--init-timeout", type=int_at_least(1), default=300,
                 help="multi-process: seconds to wait for every process to join (default 300)")
  p.add_argument("--distributed", action="store_true",
                 help="multi-process: take the coordinator, process count and id that the three flags above "
                      "leave out from the cluster (SLURM, Open MPI, Cloud TPU; docs/multiprocess.md)")
  return p


def load_config_file(path) -> dict:
  """The dict a config file's `get_config()` returns, checked against CONFIG_KEYS."""
  from jxhash import fileio
  from jxhash.errors import UserError
  path = fileio.require_readable_file(path, what="--config")
  spec = importlib.util.spec_from_file_location(f"jxhash_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - a config file is user code: any failure is its own
    raise UserError(f"--config {path}: cannot load it ({type(e).__name__}: {e})") from e
  if not callable(getattr(module, "get_config", None)):
    raise UserError(f"--config {path}: defines no get_config()")
  try:
    values = module.get_config()
  except Exception as e:  # noqa: BLE001
    raise UserError(f"--config {path}: cannot load it ({type(e).__name__}: {e})") from e
  if not isinstance(values, dict):
    raise UserError(f"--config {path}: get_config() must return a dict, got {type(values).__name__}")
  unknown = set(values) - CONFIG_KEYS
  if unknown:
    raise UserError(f"--config {path}: unknown keys {sorted(unknown)}; valid: {', '.join(sorted(CONFIG_KEYS))}")
  return values


def parse_args(argv) -> argparse.Namespace:
  """Flags, with a --config file's values as the defaults they override."""
  p = parser()
  first, _ = p.parse_known_args(argv)
  if first.config is None:
    return p.parse_args(argv)
  values = load_config_file(first.config)
  defaults = {k: v for k, v in values.items() if k not in ("set", "data_options")}
  if values.get("data_dir") is not None:  # a config file's relative paths start at the repository root
    data_dir = pathlib.Path(str(values["data_dir"])).expanduser()
    defaults["data_dir"] = str(data_dir if data_dir.is_absolute() else ROOT / data_dir)
  p.set_defaults(**defaults)
  args = p.parse_args(argv)
  args.overrides = [f"{k}={_flag_value(v)}" for k, v in values.get("set", {}).items()] + args.overrides
  given = {item.split("=", 1)[0].strip() for item in args.data_option}  # flags override the file
  args.data_option = [f"{k}={_flag_value(v)}" for k, v in values.get("data_options", {}).items()
                      if k not in given] + args.data_option
  return args


def _flag_value(value) -> str:
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value)
  return str(value).lower() if isinstance(value, bool) else str(value)


def _check_processes(args):
  """Multi-process flags: all three together, --distributed (the cluster supplies what is left
  out), or none (a single process)."""
  from jxhash.errors import UserError
  given = [args.coordinator is not None, args.num_processes is not None, args.process_id is not None]
  if not any(given) and not args.distributed:
    return None
  if not all(given) and not args.distributed:
    raise UserError("multi-process runs need --coordinator host:port, --num-processes N and --process-id i together "
                    "(or --distributed, where SLURM, Open MPI or Cloud TPU supply them)")
  if args.coordinator is not None:
    host, sep, port = args.coordinator.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise UserError(f"--coordinator {args.coordinator!r}: expected host:port with a port in 1..65535")
  if all(given[1:]) and args.process_id >= args.num_processes:
    raise UserError(f"--process-id {args.process_id} is outside 0..{args.num_processes - 1} "
                    f"(--num-processes {args.num_processes})")
  return dict(coordinator=args.coordinator, num_processes=args.num_processes, process_id=args.process_id,
              detect=args.distributed)


def build_config(spec, args):
  """The method config: defaults, then --preset, then --bits/--epochs/--batch-size, then --set."""
  from jxhash import config as config_lib
  config = config_lib.apply_preset(spec, args.preset)
  flags = {"bits": args.bits, "epochs": args.epochs, "batch_size": args.batch_size}
  config = config_lib.apply_overrides(config, [f"{k}={v}" for k, v in flags.items() if v is not None])
  config = config_lib.apply_overrides(config, args.overrides)
  if os.environ.get("JXHASH_SMOKE") == "1":
    config = config_lib.apply_overrides(config, [f"{k}={_flag_value(v)}" for k, v in spec.smoke.items()])
  return config


def run(args) -> dict:
  from jxhash import checkpoint, data as data_lib, fileio, identity, metric_log, parallel, results, train
  from jxhash.errors import UserError
  from jxhash.methods import get_method

  # everything the user named, checked before any data is read
  processes = _check_processes(args)
  spec = get_method(args.method)
  config = build_config(spec, args)
  data_options = data_lib.parse_options(args.dataset, args.data_option)
  data_dir = None
  if args.data_dir is not None:
    data_dir = fileio.resolve(args.data_dir)
    if not data_dir.is_dir():
      raise UserError(f"--data-dir {data_dir} is not a directory")
  if args.name is not None:
    identity.check_run_name(args.name)
  out = fileio.require_writable_file(args.out, what="--out") if args.out else None
  results_dir = fileio.require_writable_dir(ROOT / "results", what="results folder") if out is None else None
  checkpoint_root = None
  if not args.no_checkpoint:
    checkpoint_root = fileio.require_writable_dir(args.checkpoint_dir, what="--checkpoint-dir")
  options = train.TrainOptions(seed=args.seed, num_seeds=args.seeds, eval_every=args.eval_every,
                               normalize=args.normalize, resume=args.resume, progress=not args.no_progress,
                               stream=args.stream, prefetch=args.prefetch, augment=args.augment)
  from jxhash.data import augment as augment_lib
  augment_lib.parse(options.augment)

  group = parallel.start(**processes, timeout=args.init_timeout) if processes is not None else None
  data = data_lib.load(args.dataset, data_dir, split=args.split, seed=args.split_seed, **data_options)
  parallel.agree_on_data(data)
  ident = identity.run_identity(spec, config, data, options)
  _check_same_run(ident)
  name = args.name or identity.run_name(ident)
  out = out or results_dir / f"{name}.json"
  results.check_writable(out, ident, overwrite=args.overwrite)
  store = None
  if checkpoint_root is not None:
    store = checkpoint.CheckpointStore.open(checkpoint_root / name, checkpoint.run_metadata(spec, config, data, options),
                                            resume=args.resume, overwrite=args.overwrite)
    if group is not None:
      group.hint = functools.partial(_resume_hint, store.directory)
  log = metric_log.open(args.tensorboard and fileio.resolve(args.tensorboard) / name, config=ident)
  try:
    print(f"{name}: {spec.name} on {data.name}, {config.bits} bits, splits {data.sizes()}, "
          f"{options.num_seeds} seed(s), {len(parallel.devices())} device(s)")
    fit = train.fit(spec, config, data, options, store=store, metric_log=log)
    res = results.build(spec, config, data, options, fit,
                        extra={"run_name": name, "checkpoint": str(store.directory) if store else None})
    try:
      results.write(out, res)
    except UserError as e:
      hint = (f"; the trained model is in {store.directory}: rerun the same command with --resume to evaluate "
              "it again and write the results") if store else ""
      raise UserError(f"{e}{hint}") from e
  finally:
    log.close()
    if store is not None:
      store.close()
  std = res.get("map_std", {"i2t": None, "t2i": None})
  for d, label in (("i2t", "image->text"), ("t2i", "text->image")):
    spread = f" ± {std[d]:.4f}" if std[d] is not None else ""
    print(f"  mAP@all {label}: {res['map'][d]:.4f}{spread}")
  written = "" if parallel.is_primary() else " (written by process 0)"
  print(f"  model: {fit.selected}; train time {fit.train_time:.1f} s; results: {out}{written}"
        + (f"; checkpoint: {store.directory}" if store else ""))
  return res


def _check_same_run(ident: dict) -> None:
  """Every process of a multi-process run must be asked for the same run (same flags)."""
  from jxhash import identity, parallel
  from jxhash.errors import UserError
  differ = parallel.differing_processes(identity.identity_hash(ident, length=64))
  if differ:
    raise UserError(f"process(es) {', '.join(map(str, differ))} were started with other settings than process 0 "
                    "(method, config, seeds, data options or normalisation); give every process the same arguments")


def _resume_hint(directory) -> str:
  """What a stopped multi-process run leaves behind (read from the disk, not from orbax's state)."""
  steps = [int(p.name) for p in (pathlib.Path(directory) / "latest").glob("*") if p.name.isdigit()]
  if not steps:
    return f"no checkpoint was saved yet in {directory}"
  return f"the last checkpoint (epoch {max(steps)}) in {directory} is intact: start every process again with --resume"


def _run_in_group(args):
  """`run`, telling the other processes of a multi-process run how this one ended."""
  from jxhash import parallel
  from jxhash.errors import TrainingInterrupted, UserError
  try:
    res = run(args)
  except BaseException as e:
    group = parallel.current_group()
    if group is not None:
      if not isinstance(e, (UserError, TrainingInterrupted, KeyboardInterrupt, SystemExit)):
        # a failed collective is usually the echo of a process that died: let the watchdog
        # name that process (it ends this one) before reporting this error as the cause
        group.wait_for_peers(5.0)
      text = " ".join(str(e).split())
      group.fail(text if isinstance(e, UserError) else f"{type(e).__name__}: {text}".rstrip(": "))
    raise
  group = parallel.current_group()
  if group is not None:
    group.finish()
  return res


def main(argv=None) -> int:
  sys.path.insert(0, str(ROOT))
  # the trainer reports through logging (jxhash.train); the console shows its messages plainly
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter("%(message)s"))
  logger = logging.getLogger("jxhash")
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  # a root handler installed by a dependency (absl, via orbax) would echo them onto stderr
  propagate, logger.propagate = logger.propagate, False
  from jxhash import cli
  try:
    code = cli.main(_run_in_group, argv, _ConfigAwareParser())
  finally:
    logger.removeHandler(handler)
    logger.propagate = propagate
  from jxhash import parallel
  group = parallel.current_group()
  if group is not None and code != 0:
    # the others have been told; JAX's exit handler would wait minutes for them at its
    # shutdown barrier (and then abort), so end here unless they all finished already
    if group.peers_finished():
      import jax
      jax.distributed.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  return code


class _ConfigAwareParser:
  """`parse_args` behind the parser interface `jxhash.cli.main` expects."""

  def parse_args(self, argv):
    return parse_args(argv)


if __name__ == "__main__":
  sys.exit(main())
