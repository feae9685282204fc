"""Run a folder of config files and the baselines at several code lengths; print their table.

    jxhash reproduce configs/wikipedia                       # everything, 16/32/64 bits, 5 seeds
    jxhash reproduce configs/wikipedia --only dcmh,dcmh-tuned --bits 32 --jobs 4

For every config file `configs/<dataset>/<name>.py` and every code length, this runs
`jxhash train --config <file> --bits B --seeds S --out <results>` (and `jxhash baselines` for
the baselines), with results under <workdir>/results/reproduce/<dataset>/<name>-<B>bits.json. A
results file already there for the same run (same identity: config, data, seeds) is reused by
`jxhash train` itself; one for a different run (the config file changed) is refused, and
--force trains it again. The table of every results file in that folder is printed and written
to table.md beside them. No source file is written: `jxhash report ... --update-readme README.md`
puts a table into the README, explicitly. `--preset NAME` runs every config file at that preset
of its method (checked for every file before any run). `--preset smoke` (as the README test
appends it) checks the plumbing, not the numbers: every run shrinks to its method's smoke
configuration (and to a small split where the dataset's split sizes are options), and only the
first code length runs, with at most 2 seeds.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import subprocess
import sys

BASELINES = ("lsh", "cca-sign", "ridge-itq")
EXAMPLES = ["jxhash reproduce configs/wikipedia",
            "jxhash reproduce configs/wikipedia --only dcmh,lsh --bits 32 --seeds 3 --jobs 2",
            "jxhash reproduce configs/wikipedia --preset smoke     # every run tiny: checks the commands run"]


def config_files(folder: pathlib.Path, only=None) -> list[pathlib.Path]:
  files = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
  if only:
    files = [p for p in files if p.stem in only]
  return files


# `--preset smoke` checks the plumbing, not the numbers: on datasets whose split sizes are
# options, it also shrinks the split, since a smoke run's small batches over MIRFlickr's 10000
# training items would take a minute each.
SMOKE_SPLIT = {"num_query": 100, "num_train": 300, "num_val": 50, "num_retrieval": 1000}


def smoke_options(dataset: str, preset: str | None) -> list[str]:
  """--data-option flags that shrink `dataset`'s split at the smoke preset (none at any other
  preset, or if the split is fixed)."""
  from jxhash import config as config_lib, data
  if preset != config_lib.SMOKE:
    return []
  names = data.schema(dataset).names
  if "num_train" not in names:  # a fixed split (Wikipedia's official one) stays as it is
    return []
  return [f for key, value in SMOKE_SPLIT.items() if key in names for f in ("--data-option", f"{key}={value}")]


def _run(command: list[str], log: pathlib.Path) -> int:
  with open(log, "w") as f:
    return subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=os.environ).returncode


def jobs(args, folder: pathlib.Path, out_dir: pathlib.Path, configs: dict) -> list:
  """(name, bits, command, results path) of every run, configs then baselines."""
  first = next(iter(configs.values()), None)
  dataset = first.data.name if first is not None else folder.name
  smoke = smoke_options(dataset, args.preset)
  force = ["--overwrite"] if args.force else []
  preset = ["--preset", args.preset] if args.preset is not None else []
  out = []
  for path, s in configs.items():
    for bits in args.bits:
      result = out_dir / f"{path.stem}-{bits}bits.json"
      cmd = [sys.executable, "-m", "jxhash", "train", "--config", str(path), "--bits", str(bits),
             "--seeds", str(args.seeds), "--no-checkpoint", "--no-progress", "--no-tensorboard", "--out", str(result),
             *force, *preset, *smoke]
      if args.data_dir is not None:
        cmd += ["--data-dir", s.data.dir]
      out.append((path.stem, bits, cmd, result))
  from jxhash import config as config_lib
  # the baselines read the data the way the configs do
  for name in BASELINES:
    if args.only and name not in args.only:
      continue
    for bits in args.bits:
      result = out_dir / f"{name}-{bits}bits.json"
      if result.exists() and not args.force:
        continue
      cmd = [sys.executable, "-m", "jxhash", "baselines", "--baseline", name,
             "--dataset", dataset,
             "--bits", str(bits), "--seeds", str(args.seeds), "--out", str(result)]
      if first is not None and first.data.dir:
        cmd += ["--data-dir", first.data.dir]
      for key, value in (first.data.options.items() if first is not None else ()):
        if key not in {f.split("=", 1)[0] for f in smoke[1::2]}:
          cmd += ["--data-option", f"{key}={config_lib.flag_text(value)}"]
      cmd += smoke
      out.append((name, bits, cmd, result))
  return out


def run(args) -> None:
  from jxhash import fileio
  from jxhash.commands import flags
  from jxhash.errors import UserError
  folder = fileio.resolve(args.folder)
  if not folder.is_dir():
    raise UserError(f"{args.folder}: no such folder of config files")
  files = config_files(folder, args.only)
  if not files and not (args.only and set(args.only) & set(BASELINES)):
    raise UserError(f"{folder}: no config files" + (f" named {', '.join(sorted(args.only))}" if args.only else ""))
  configs = {path: flags.config_file_settings(path) for path in files}  # every file checked before any run
  for path, s in configs.items():
    # configs/<dataset>/ holds a loader's configs, configs/<dataset>-<family>/ a prepared protocol's
    if s.data.name not in (folder.name, "prepared"):
      raise UserError(f"--config {path}: dataset {s.data.name!r} is not this folder's ({folder.name!r})")
  if args.data_dir is not None:
    data_dir = fileio.resolve(args.data_dir)
    if not data_dir.is_dir():
      raise UserError(f"--data-dir {data_dir} is not a directory")
    configs = {path: s.replace(data={"dir": str(data_dir)}) for path, s in configs.items()}
  if args.preset is not None:
    from jxhash import config as config_lib
    from jxhash.methods import get_method
    for path, s in configs.items():  # a preset some method lacks: one line, before any run
      try:
        config_lib.apply_preset(get_method(s.method.name), args.preset)
      except UserError as e:
        raise UserError(f"--config {path}: {e}") from None
    if args.preset == config_lib.SMOKE:
      args.bits, args.seeds = args.bits[:1], min(args.seeds, 2)
  workdir = fileio.require_writable_dir(args.workdir, what="--workdir")
  out_dir = fileio.require_writable_dir(workdir / "results" / "reproduce" / folder.name, what="results folder")
  out_dir.mkdir(parents=True, exist_ok=True)
  todo = jobs(args, folder, out_dir, configs)
  print(f"{len(todo)} run(s) in {folder} (finished ones are reused)")
  with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
    codes = list(pool.map(lambda j: (j, _run(j[2], j[3].with_suffix(".log"))), todo))
  failed = [j for j, code in codes if code != 0]
  for j in failed:
    print(f"failed: {j[0]} {j[1]} bits (log: {j[3].with_suffix('.log')})")
  every = sorted(out_dir.glob("*.json"))
  if every:
    from jxhash.commands import report
    text = report.table(report.load_results([str(p) for p in every]))
    print(text)
    fileio.atomic_write(out_dir / "table.md", text + "\n", what="results table")
  if failed:
    raise UserError(f"{len(failed)} of {len(todo)} run(s) failed (logs named above)")


def _bits(text: str) -> list[int]:
  import argparse
  try:
    values = [int(b) for b in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
  if not values or min(values) < 1:
    raise argparse.ArgumentTypeError(f"code lengths must be >= 1, got {text!r}")
  return values


def main(argv=None) -> int:
  from jxhash import cli
  from jxhash.commands import flags
  p = flags.parser(__doc__.split("\n")[0], EXAMPLES)
  p.add_argument("folder", help="configs/<dataset>")
  p.add_argument("--bits", type=_bits, default=[16, 32, 64], help="code lengths, comma-separated (default 16,32,64)")
  flags.add_seeds(p, default=5, help="model seeds per run (default 5)")
  flags.add_preset(p, help="run every config file at this preset of its method; smoke: tiny runs, the first code "
                           "length, at most 2 seeds, small splits (module docstring)")
  p.add_argument("--only", type=lambda t: set(t.split(",")), default=None,
                 help="config names / baselines to run, comma-separated")
  p.add_argument("--jobs", type=cli.int_at_least(1), default=1, help="runs at once (subprocesses)")
  p.add_argument("--force", action="store_true", help="train again even where results of the same run exist")
  p.add_argument("--data-dir", default=None, help="the data folder for every run (e.g. a prepared protocol folder); "
                                                  "default: each config file's")
  flags.add_workdir(p)
  return cli.main(run, argv, p)


if __name__ == "__main__":
  sys.exit(main())
