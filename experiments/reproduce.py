"""Run a dataset's config files and baselines, record their results in the config files and the README.

    python experiments/reproduce.py configs/wikipedia                       # everything, 16/32/64 bits, 5 seeds
    python experiments/reproduce.py configs/wikipedia --only dcmh,dcmh-tuned --bits 32 --jobs 4

For every config file `configs/<dataset>/<name>.py` and every code length, this runs
`experiments/run.py --config <file> --bits B --seeds S` (and `experiments/baselines.py` for the
baselines), writing results/reproduce/<dataset>/<name>-<B>bits.json; a results file already
there for the same run is reused (--force runs it again). Then it writes:
- into each config file, between its `expected results` markers, the table rows its runs
  produced (the mean ± std over the seeds), so a config file states what it gives;
- the README's table between `<!-- results:<dataset>:start -->` and `...:end -->`, made by
  `experiments/report.py` from the same results files.
Nothing is typed by hand: tests/test_configs.py checks that every row a config file states is
in the README table. With `JXHASH_SMOKE=1` in the environment (as the README test sets it)
every run shrinks to its method's smoke configuration (and to a small split where the
dataset's split sizes are options), and only the first code length runs, with 2 seeds.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASELINES = ("lsh", "cca-sign", "ridge-itq")
START, END = "<!-- expected:start -->", "<!-- expected:end -->"


def config_files(folder: pathlib.Path, only=None) -> list[pathlib.Path]:
  files = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
  if only:
    files = [p for p in files if p.stem in only]
  return files


# Smoke mode (the README test) checks the plumbing, not the numbers: on datasets whose split
# sizes are options, it also shrinks the split, since a smoke run's small batches over
# MIRFlickr's 10000 training items would take a minute each.
SMOKE_SPLIT = {"num_query": 100, "num_train": 300, "num_val": 50, "num_retrieval": 1000}


def smoke_options(dataset: str) -> list[str]:
  """--data-option flags that shrink `dataset`'s split in smoke mode (none if it is fixed)."""
  from jxhash import data
  if os.environ.get("JXHASH_SMOKE") != "1":
    return []
  names = data.schema(dataset).names
  if "num_train" not in names:  # a fixed split (Wikipedia's official one) stays as it is
    return []
  return [f for key, value in SMOKE_SPLIT.items() if key in names for f in ("--data-option", f"{key}={value}")]


def _run(command: list[str], log: pathlib.Path) -> int:
  with open(log, "w") as f:
    return subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ).returncode


def jobs(args, folder: pathlib.Path, out_dir: pathlib.Path) -> list[tuple[str, int, list[str], pathlib.Path]]:
  """(name, bits, command, results path) of every run, configs then baselines."""
  dataset = folder.name
  smoke = smoke_options(dataset)
  out = []
  for path in config_files(folder, args.only):
    for bits in args.bits:
      result = out_dir / f"{path.stem}-{bits}bits.json"
      cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), "--config", str(path), "--bits", str(bits),
             "--seeds", str(args.seeds), "--no-checkpoint", "--no-progress", "--overwrite", "--out", str(result),
             *smoke]
      out.append((path.stem, bits, cmd, result))
  data_dir, data_options = None, {}
  for path in config_files(folder):  # the baselines read the data the way the configs do
    values = _load(path)
    data_dir = data_dir or values.get("data_dir")
    data_options = data_options or values.get("data_options", {})
  for name in BASELINES:
    if args.only and name not in args.only:
      continue
    for bits in args.bits:
      result = out_dir / f"{name}-{bits}bits.json"
      cmd = [sys.executable, str(ROOT / "experiments" / "baselines.py"), "--baseline", name, "--dataset", dataset,
             "--bits", str(bits), "--seeds", str(args.seeds), "--out", str(result)]
      if data_dir:
        cmd += ["--data-dir", str(data_dir if pathlib.Path(data_dir).is_absolute() else ROOT / data_dir)]
      for key, value in data_options.items():
        cmd += ["--data-option", f"{key}={value}"]
      cmd += smoke
      out.append((name, bits, cmd, result))
  return out


def _load(path: pathlib.Path) -> dict:
  sys.path.insert(0, str(ROOT / "experiments"))
  import run as run_cli
  return run_cli.load_config_file(path)


def expected_block(rows: list[str]) -> str:
  return "\n".join([START, *rows, END])


def write_expected(path: pathlib.Path, rows: list[str], command: str) -> None:
  """Replace the config file's expected-results block (between the markers) with `rows`."""
  from jxhash import fileio
  text = path.read_text()
  block = expected_block([f"Produced by: {command}", *rows])
  if START in text and END in text:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    text = head + block + tail
  else:
    raise SystemExit(f"error: {path} has no {START} ... {END} block in its docstring")
  fileio.atomic_write(path, text, what="config file")


def main(argv=None) -> int:
  sys.path.insert(0, str(ROOT))
  sys.path.insert(0, str(ROOT / "experiments"))
  import report
  from jxhash.cli import ArgumentParser
  p = ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("folder", help="configs/<dataset>")
  p.add_argument("--bits", default="16,32,64", help="code lengths, comma-separated")
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--only", default=None, help="config names / baselines to run, comma-separated")
  p.add_argument("--jobs", type=int, default=1, help="runs at once (subprocesses)")
  p.add_argument("--force", action="store_true", help="run again even where results exist")
  p.add_argument("--readme", default=str(ROOT / "README.md"))
  p.add_argument("--no-readme", action="store_true")
  args = p.parse_args(argv)
  args.bits = [int(b) for b in args.bits.split(",")]
  if os.environ.get("JXHASH_SMOKE") == "1":
    args.bits, args.seeds = args.bits[:1], min(args.seeds, 2)
  args.only = set(args.only.split(",")) if args.only else None
  folder = pathlib.Path(args.folder).resolve()
  out_dir = ROOT / "results" / "reproduce" / folder.name
  out_dir.mkdir(parents=True, exist_ok=True)
  todo = [j for j in jobs(args, folder, out_dir) if args.force or not j[3].exists()]
  print(f"{len(todo)} run(s) to do in {folder}")
  with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
    codes = list(pool.map(lambda j: (j, _run(j[2], j[3].with_suffix(".log"))), todo))
  failed = [j for j, code in codes if code != 0]
  for j in failed:
    print(f"failed: {j[0]} {j[1]} bits (log: {j[3].with_suffix('.log')})")
  every = sorted(out_dir.glob("*.json"))
  rows = report.load_results([str(p) for p in every])
  # each config file states the rows of its own runs, exactly as the README table shows them
  lines = report.table(rows).splitlines()[2:]
  for path in config_files(folder, args.only):
    mine = [(r, line) for r, line in zip(rows, lines) if pathlib.Path(r["_path"]).stem.rsplit("-", 1)[0] == path.stem]
    if mine:
      # the command that gives all of the file's rows, which earlier invocations may have added to
      bits = ",".join(str(b) for b in sorted({int(r["bits"]) for r, _ in mine}))
      command = (f"python experiments/reproduce.py configs/{folder.name} --only {path.stem} --bits {bits} "
                 f"--seeds {args.seeds}")
      write_expected(path, [line for _, line in mine], command)
  if not args.no_readme:
    report.main([*map(str, every), "--readme", args.readme, "--section", folder.name])
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
