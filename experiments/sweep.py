"""Choose hyper-parameters on a validation split, then evaluate the chosen setting once on the test protocol.

    python experiments/sweep.py --method=dcmh --dataset=wikipedia --data-dir=../shared/data/wikipedia \
        --bits=32 --seeds=3 --grid lr=0.003,0.01,0.03 --grid eta=0.1,1 --out-dir results/sweeps/dcmh-wikipedia

Every setting of the grid (or `--random N` settings drawn from it) trains `--seeds` model seeds
in one vmapped program on the training items minus a validation split, and is scored by the
validation mAP (the mean of both directions and of the seeds, at the epoch the trainer selects
on val). Val items are held out of training and ranked against the retrieval set without them;
the test queries are never looked at. The best setting is then trained again on the dataset's
test protocol (the same options without the val carve: for Wikipedia, the official 2173 training
items) with `--test-seeds` seeds, and evaluated once on the query set.

Writes, under --out-dir: settings/<run name>.json (one results file per setting, with its val
score), summary.md and summary.json (the table, best first), and test.json (the chosen
setting's test-protocol results, with the sweep recorded). `--write-config PATH` also writes a
config file that runs the chosen setting (the fields that differ from the defaults, the fixed
`--set` values and the data flags), with the sweep's command and table in its docstring and
empty expected-results markers for `experiments/reproduce.py` to fill. Resumable: a setting whose results
file exists for the same run identity is not trained again. `--jobs N` trains N settings at
once in separate processes (for machines with many cores or an accelerator with room to share).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import multiprocessing
import os
import pathlib
import random
import shlex
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT))

import run as run_cli  # noqa: E402  (its config building)
from reproduce import END, START  # noqa: E402  (the expected-results markers it fills)
from jxhash import cli  # noqa: E402


def parse_args(argv):
  p = cli.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--method", default="dcmh")
  p.add_argument("--preset", default=None, help="the setting the grid changes (default: the method's defaults)")
  p.add_argument("--dataset", default="synthetic")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                 help="loader option for every run (repeatable)")
  p.add_argument("--val-option", action="append", default=None, metavar="KEY=VALUE",
                 help="loader option for the search only, which carves its val split "
                      "(default for wikipedia: num_val=200; other datasets have a val split already)")
  p.add_argument("--split-seed", type=cli.int_at_least(0), default=0)
  p.add_argument("--bits", type=cli.int_at_least(1), default=None)
  p.add_argument("--epochs", type=cli.int_at_least(1), default=None)
  p.add_argument("--batch-size", type=cli.int_at_least(1), default=None)
  p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                 help="fixed config override for every setting (repeatable)")
  p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                 help="a config field and its candidate values (repeatable; the grid is their product)")
  p.add_argument("--random", type=cli.int_at_least(1), default=None,
                 help="try this many settings drawn from the grid instead of all of them")
  p.add_argument("--sample-seed", type=cli.int_at_least(0), default=0, help="seed of the --random draw")
  p.add_argument("--seed", type=cli.int_at_least(0), default=0, help="first model seed")
  p.add_argument("--seeds", type=cli.int_at_least(1), default=3, help="model seeds per setting (vmapped)")
  p.add_argument("--test-seeds", type=cli.int_at_least(1), default=None,
                 help="seeds of the final test-protocol run (default: --seeds)")
  p.add_argument("--eval-every", type=cli.int_at_least(0), default=10)
  p.add_argument("--normalize", default="standardize", choices=("standardize", "center", "none"))
  p.add_argument("--jobs", type=cli.int_at_least(1), default=1, help="settings trained at once")
  p.add_argument("--no-test", action="store_true", help="stop after the search")
  p.add_argument("--out-dir", required=True, help="where the settings, summary and test results go")
  p.add_argument("--write-config", default=None, metavar="PATH",
                 help="write a config file (configs/<dataset>/<method>-tuned.py) that runs the chosen setting")
  args = p.parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)  # the command a written config file records
  return args


def _grid(specs) -> list[dict]:
  """[{field: value-as-text}] for the product of `--grid field=v1,v2` specs, in order."""
  from jxhash.errors import UserError
  axes = []
  for item in specs:
    if "=" not in item:
      raise UserError(f"--grid expects field=v1,v2,..., got {item!r}")
    key, values = item.split("=", 1)
    choices = [v for v in values.split(",") if v.strip()]
    if not choices:
      raise UserError(f"--grid {key}: no values")
    axes.append([(key.strip(), v.strip()) for v in choices])
  return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def _configured(args, setting: dict):
  from jxhash.methods import get_method
  spec = get_method(args.method)
  ns = argparse.Namespace(preset=args.preset, bits=args.bits, epochs=args.epochs, batch_size=args.batch_size,
                          overrides=[*args.overrides, *(f"{k}={v}" for k, v in setting.items())])
  return spec, run_cli.build_config(spec, ns)


def _load(args, options: list[str]):
  from jxhash import data as data_lib, fileio
  data_dir = fileio.resolve(args.data_dir) if args.data_dir else None
  return data_lib.load(args.dataset, data_dir, seed=args.split_seed,
                       **data_lib.parse_options(args.dataset, options))


def _val_options(args) -> list[str]:
  if args.val_option is not None:
    return args.val_option
  return ["num_val=200"] if args.dataset == "wikipedia" else []


def run_setting(args, setting: dict, out_dir: pathlib.Path) -> dict:
  """Train one setting with val selection; its results file, reused when it is already there."""
  from jxhash import identity, results, train
  from jxhash.errors import UserError
  spec, config = _configured(args, setting)
  data = _load(args, [*args.data_option, *_val_options(args)])
  if data.val.size == 0:
    raise UserError(f"dataset {data.name!r} has no val split to choose on; give --val-option (e.g. num_val=200)")
  options = train.TrainOptions(seed=args.seed, num_seeds=args.seeds, eval_every=args.eval_every,
                               normalize=args.normalize, progress=False)
  ident = identity.run_identity(spec, config, data, options)
  path = out_dir / "settings" / f"{identity.run_name(ident)}.json"
  if path.exists():
    old = json.loads(path.read_text())
    if not identity.identity_diff(old, ident) and "val_score" in old:
      return old
  try:
    fit = train.fit(spec, config, data, options)
  except train.TrainingDiverged as e:
    # a setting that diverges is a result of the search (its score is "failed"), not an error
    res = {**ident, "run_name": identity.run_name(ident), "setting": setting, "val_score": None,
           "diverged": str(e), "num_seeds": args.seeds}
    results.write(path, res)
    return res
  vals = [h["val_map"] for h in fit.history if "val_map" in h]
  res = results.build(spec, config, data, options, fit,
                      extra={"run_name": identity.run_name(ident), "setting": setting,
                             "val_score": max(vals) if vals else None})
  results.write(path, res)
  return res


def _one(payload):
  args, setting, out_dir = payload
  return run_setting(args, setting, out_dir)


def summary_table(rows: list[dict], fields: list[str]) -> str:
  """Markdown, best val score first: the setting, val score, and both test mAPs of the search runs."""
  head = "| rank | " + " | ".join(fields) + " | val mAP (mean of seeds, both directions) | seeds |"
  lines = [head, "|" + "---|" * (len(fields) + 3)]
  for rank, r in enumerate(rows, 1):
    cells = [str(r["setting"].get(f, "")) for f in fields]
    score = "failed" if r.get("val_score") is None else f"{r['val_score']:.4f}"
    lines.append(f"| {rank} | " + " | ".join(cells) + f" | {score} | {r.get('num_seeds', '')} |")
  return "\n".join(lines)


def tuned_config(args, best: dict, table: str) -> str | None:
  """The text of a config file that runs `best["setting"]`; None when that is the defaults.

  `set` holds the fixed `--set` values and the grid fields whose chosen value differs from the
  defaults (after `--preset`); the data flags of the search (not its val carve) come along.
  """
  _, base = _configured(args, {})
  _, chosen = _configured(args, best["setting"])
  fixed = [item.split("=", 1)[0].strip() for item in args.overrides]
  picked = [k for k in best["setting"] if getattr(chosen, k) != getattr(base, k)]
  values = {k: getattr(chosen, k) for k in dict.fromkeys([*fixed, *picked])}
  # numbers stay numbers in the file; tuples become the `--set` text "64,32"
  values = {k: run_cli._flag_value(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}
  extra = {"preset": args.preset, "epochs": args.epochs, "batch_size": args.batch_size,
           "split_seed": args.split_seed or None,
           "normalize": None if args.normalize == "standardize" else args.normalize}
  extra = {k: v for k, v in extra.items() if v is not None}
  if not values and not extra:
    return None
  config = {"method": args.method, "dataset": args.dataset}
  if args.data_dir:  # a config file's relative paths start at the repository root, not the cwd
    given = pathlib.Path(args.data_dir).expanduser()
    config["data_dir"] = str(given) if given.is_absolute() else os.path.relpath(given.resolve(), ROOT)
  if args.data_option:
    config["data_options"] = dict(item.split("=", 1) for item in args.data_option)
  config.update(extra)
  if values:
    config["set"] = values
  chose = ", ".join(f"{k}={getattr(chosen, k)}" for k in picked) or "the defaults"
  defaults = ", ".join(f"{k}={getattr(base, k)}" for k in picked)
  command = "python experiments/sweep.py " + " ".join(shlex.quote(a) for a in args.argv)
  body = textwrap.indent(table, "    ")
  return (f'''"""{args.method.upper()} on {args.dataset} with the setting its validation sweep chose: {chose}'''
          + (f" (defaults: {defaults})" if defaults else "") + f'''.

    python experiments/run.py --config {args.write_config} --seeds 5

Written by the validation sweep (val score: {best["val_score"]:.4f}; the test queries never looked at):

    {command}

{body}

Expected results (mean ± std over the seeds; rows as in the README's table):
{START}
{END}
"""


def get_config():
  return {config!r}
''')


def sweep(args) -> dict:
  from jxhash import fileio, identity, results, train
  from jxhash.errors import UserError
  out_dir = fileio.require_writable_dir(args.out_dir, what="--out-dir")
  if args.write_config:
    fileio.require_writable_file(args.write_config, what="--write-config")
  settings = _grid(args.grid)
  for s in settings:  # every setting must make a valid config before anything trains
    _configured(args, s)
  if args.random is not None and args.random < len(settings):
    settings = random.Random(args.sample_seed).sample(settings, args.random)
  fields = list(settings[0])
  print(f"{args.method} on {args.dataset}: {len(settings)} setting(s) x {args.seeds} seed(s), chosen on val")
  payloads = [(args, s, out_dir) for s in settings]
  if args.jobs > 1:
    # spawned, not forked: a fork of a process that has started JAX's threads can deadlock
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
      rows = list(pool.map(_one, payloads))
  else:
    rows = [_one(p) for p in payloads]
  rows.sort(key=lambda r: -(r.get("val_score") or -1.0))
  table = summary_table(rows, fields)
  print(table)
  fileio.atomic_write(out_dir / "summary.md", table + "\n", what="sweep summary")
  fileio.atomic_write_json(out_dir / "summary.json",
                           [{"setting": r["setting"], "val_score": r["val_score"], "run_name": r["run_name"],
                             "diverged": r.get("diverged"), "map": r.get("map"), "map_std": r.get("map_std"),
                             "selected": r.get("selected")} for r in rows],
                           what="sweep summary")
  best = rows[0]
  if best.get("val_score") is None:
    raise UserError("no setting produced a val score")
  if args.write_config:
    text = tuned_config(args, best, table)
    if text is None:
      print(f"the sweep chose the defaults: {args.write_config} not written")
    else:
      fileio.atomic_write(fileio.resolve(args.write_config), text, what="config file")
      print(f"wrote {args.write_config}")
  if args.no_test:
    return {"best": best["setting"]}
  spec, config = _configured(args, best["setting"])
  data = _load(args, args.data_option)
  options = train.TrainOptions(seed=args.seed, num_seeds=args.test_seeds or args.seeds, eval_every=args.eval_every,
                               normalize=args.normalize, progress=False)
  fit = train.fit(spec, config, data, options)
  sweep_record = {"fields": fields, "chosen": best["setting"], "val_score": best["val_score"],
                  "val_option": _val_options(args), "settings": len(rows), "seeds_per_setting": args.seeds}
  res = results.build(spec, config, data, options, fit,
                      extra={"run_name": identity.run_name(identity.run_identity(spec, config, data, options)),
                             "sweep": sweep_record})
  results.write(out_dir / "test.json", res)
  std = res.get("map_std", {})
  print(f"chosen on val: {best['setting']} (val {best['val_score']:.4f}); test protocol, "
        f"{options.num_seeds} seed(s): I->T {res['map']['i2t']:.4f}" + (f" ± {std['i2t']:.4f}" if std else "")
        + f", T->I {res['map']['t2i']:.4f}" + (f" ± {std['t2i']:.4f}" if std else ""))
  return res


class _Parser:
  def parse_args(self, argv):
    return parse_args(argv)


def main(argv=None) -> int:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  return cli.main(sweep, argv, _Parser())


if __name__ == "__main__":
  sys.exit(main())
