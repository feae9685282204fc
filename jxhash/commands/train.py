"""`jxhash train`: train and evaluate one method end to end; write a results JSON and checkpoints.

Every run is named from its identity (`jxhash.runs.identity.run_name`, or `--name`): its checkpoints
go to <workdir>/checkpoints/<name>/ and its results to <workdir>/results/<name>.json (or
--out), so seed loops, `--seeds S` after `--seeds 1` and config changes never collide. The same
command after a kill continues from the last checkpoint; on a finished run it says where the
results are and trains nothing (`--restart` starts over, `--overwrite` retrains and replaces).
Everything the user names is checked before any data is loaded or trained: bad input prints one
line on stderr and exits with code 2; a run that diverges exits with code 4; Ctrl-C stops with
one line and exit code 130, keeping the last checkpoint.

Multi-process runs (docs/multiprocess.md): the same command in every process plus --coordinator
host:port --num-processes N --process-id i (or --distributed on SLURM, Open MPI, Cloud TPU), or
`jxhash launch` on one machine. Only process 0 writes results and run metadata. A process that
does not join within --init-timeout is named in one line (exit code 2); a process that dies or
fails stops the others, each with one line naming it (exit code 3).
"""

from __future__ import annotations

import logging
import os
import sys

from jxhash.cli import int_at_least
from jxhash.commands import flags

EXAMPLES = [
    "jxhash train --method=mmach                       # synthetic default data, a few minutes on a CPU",
    "jxhash train --method=dcmh --dataset=wikipedia --data-dir=../shared/data/wikipedia --bits=32 --seeds=5",
    "jxhash train --config configs/wikipedia/dcmh.py --config.method.lr=30",
    "jxhash train --method=dcmh --preset paper         # the published settings",
]


def parser():
  p = flags.parser(__doc__.split("\n")[0].split(": ", 1)[1], EXAMPLES)
  flags.add_experiment_flags(p)
  flags.add_workdir(p)
  p.add_argument("--name", default=None, help="run name (default: from the run's identity)")
  p.add_argument("--out", default=None, help="results JSON path (default: <workdir>/results/<run name>.json)")
  p.add_argument("--checkpoint-dir", default=None, help="checkpoint root (default: <workdir>/checkpoints)")
  p.add_argument("--no-checkpoint", action="store_true", help="write no checkpoints")
  p.add_argument("--resume", action="store_true",
                 help="continue this run from its latest checkpoint (the default; kept for older scripts)")
  p.add_argument("--restart", action="store_true", help="train from scratch even where this run's checkpoints are")
  p.add_argument("--overwrite", action="store_true",
                 help="retrain a finished run, or replace another run's results and checkpoints")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--no-tensorboard", action="store_true",
                 help="write no TensorBoard logs (default: <workdir>/logs/<run name>/, losses and val mAP per epoch)")
  p.add_argument("--coordinator", default=None, help="multi-process: coordinator host:port")
  p.add_argument("--num-processes", type=int_at_least(1), default=None, help="multi-process: number of processes")
  p.add_argument("--process-id", type=int_at_least(0), default=None, help="multi-process: this process's index")
  p.add_argument("--init-timeout", type=int_at_least(1), default=300,
                 help="multi-process: seconds to wait for every process to join (default 300)")
  p.add_argument("--heartbeat-timeout", type=int_at_least(1), default=100,
                 help="multi-process: seconds without a heartbeat before JAX declares a process dead (default 100)")
  p.add_argument("--distributed", action="store_true",
                 help="multi-process: take the coordinator, process count and id that the three flags above "
                      "leave out from the cluster (SLURM, Open MPI, Cloud TPU; docs/multiprocess.md)")
  return p


class _Parser:
  """Flags plus `--config.SECTION.FIELD=VALUE` items, into settings."""

  def parse_args(self, argv):
    dotted, rest = flags.split_dotted(list(sys.argv[1:] if argv is None else argv))
    args = parser().parse_args(rest)
    args.dotted = dotted
    return args


def parse_args(argv):
  """The parsed flags (with `.dotted`, the `--config.x.y=v` items) of `argv`."""
  return _Parser().parse_args(argv)


def build_config(spec, args):
  """The method config the parsed flags `args` give `spec`."""
  from jxhash.settings import method_config
  return method_config(spec, settings_of(args))


def settings_of(args):
  """The run's settings: config file, flags, dotted items, and the output flags."""
  s = flags.settings_from_args(args, args.dotted)
  return s.replace(output={"workdir": args.workdir, "out": args.out, "checkpoint_dir": args.checkpoint_dir,
                           "checkpoint": not args.no_checkpoint, "progress": not args.no_progress,
                           "tensorboard": not args.no_tensorboard,
                           "restart": args.restart, "overwrite": args.overwrite})


def check_processes(args):
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
              detect=args.distributed, heartbeat_timeout=args.heartbeat_timeout)


def run(args) -> dict:
  """Run the experiment the flags describe and print its summary; the results dict."""
  from jxhash import experiment
  from jxhash import distributed
  processes = check_processes(args)
  s = settings_of(args)
  result = experiment.run(s, processes=processes, init_timeout=args.init_timeout)
  if result.already_complete:
    return result.results
  res = result.results
  std = res.get("map_std", {"i2t": None, "t2i": None})
  for d, label in (("i2t", "image->text"), ("t2i", "text->image")):
    spread = f" ± {std[d]:.4f}" if std[d] is not None else ""
    print(f"  mAP@all {label}: {res['map'][d]:.4f}{spread}")
  written = "" if distributed.is_primary() else " (written by process 0)"
  out = result.path or "results file"
  print(f"  model: {result.fit.selected}; train time {result.fit.train_time:.1f} s; results: {out}{written}"
        + (f"; checkpoint: {result.checkpoint_dir}" if result.checkpoint_dir else ""))
  return res


def _run_in_group(args):
  """`run`, telling the other processes of a multi-process run how this one ended."""
  from jxhash import distributed
  from jxhash.errors import TrainingInterrupted, UserError
  try:
    res = run(args)
  except BaseException as e:
    group = distributed.current_group()
    if group is not None:
      if not isinstance(e, (UserError, TrainingInterrupted, KeyboardInterrupt, SystemExit)):
        # a failed collective is usually the echo of a process that died: let the watchdog
        # name that process (it ends this one) before reporting this error as the cause
        group.wait_for_peers(5.0)
      text = " ".join(str(e).split())
      group.fail(text if isinstance(e, UserError) else f"{type(e).__name__}: {text}".rstrip(": "))
    raise
  group = distributed.current_group()
  if group is not None:
    group.finish()
  return res


def main(argv=None) -> int:
  from jxhash import cli
  # the trainer reports through logging (jxhash.training); the console shows its messages plainly
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter("%(message)s"))
  logger = logging.getLogger("jxhash")
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  # a root handler installed by a dependency (absl, via orbax) would echo them onto stderr
  propagate, logger.propagate = logger.propagate, False
  try:
    code = cli.main(_run_in_group, argv, _Parser())
  finally:
    logger.removeHandler(handler)
    logger.propagate = propagate
  from jxhash import distributed
  group = distributed.current_group()
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
