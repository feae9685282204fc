"""Choose hyper-parameters on a validation split, then evaluate the chosen setting once on the test protocol.

    jxhash sweep --method=dcmh --dataset=wikipedia --data-dir=../shared/data/wikipedia \
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
no results (they come from `jxhash reproduce`). Resumable: a setting whose results file exists for
the same run identity (and holds a valid val score) is not trained again; an --out-dir holding
another sweep (other grid or fixed settings) is refused unless --overwrite. `--jobs N` trains N settings at
once in separate processes (for machines with many cores or an accelerator with room to share).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import math
import multiprocessing
import os
import pathlib
import random
import shlex
import sys
import textwrap

from jxhash import cli
from jxhash.commands import flags

EXAMPLES = [
    "jxhash sweep --method=dcmh --dataset=wikipedia --data-dir=../shared/data/wikipedia --bits=32 \\\n"
    "      --grid lr=0.003,0.01,0.03 --grid eta=0.1,1 --out-dir sweeps/dcmh-wikipedia",
    "jxhash sweep --method=mmach --grid epochs=50,100 --seeds 2 --no-test --out-dir sweeps/mmach",
]


def parse_args(argv):
  p = flags.parser(__doc__.split("\n")[0], EXAMPLES)
  flags.add_method_flags(p)
  flags.add_data_flags(p)
  p.add_argument("--val-option", action="append", default=None, metavar="KEY=VALUE",
                 help="loader option for the search only, which carves its val split "
                      "(default for wikipedia: num_val=200; other datasets have a val split already)")
  p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                 help="a config field and its candidate values (repeatable; the grid is their product)")
  p.add_argument("--random", type=cli.int_at_least(1), default=None,
                 help="try this many settings drawn from the grid instead of all of them")
  p.add_argument("--sample-seed", type=cli.int_at_least(0), default=0, help="seed of the --random draw")
  flags.add_train_flags(p, seeds_default=3)
  p.add_argument("--test-seeds", type=cli.int_at_least(1), default=None,
                 help="seeds of the final test-protocol run (default: --seeds)")
  p.add_argument("--jobs", type=cli.int_at_least(1), default=1, help="settings trained at once")
  p.add_argument("--no-test", action="store_true", help="stop after the search")
  flags.add_workdir(p)
  p.add_argument("--out-dir", required=True, help="where the settings, summary and test results go "
                                                   "(relative to --workdir)")
  p.add_argument("--write-config", default=None, metavar="PATH",
                 help="write a config file (configs/<dataset>/<method>-tuned.py) that runs the chosen setting")
  p.add_argument("--overwrite", action="store_true",
                 help="replace another sweep's files in --out-dir, or an existing --write-config file")
  args = p.parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)  # the command a written config file records
  args.settings = flags.settings_from_args(args)
  return args


def _grid(specs) -> list[dict]:
  """[{field: value-as-text}] for the product of `--grid field=v1,v2` specs, in order."""
  from jxhash.errors import UserError
  axes, seen = [], set()
  for item in specs:
    if "=" not in item:
      raise UserError(f"--grid expects field=v1,v2,..., got {item!r}")
    key, values = item.split("=", 1)
    key = key.strip().replace("-", "_")
    choices = [v for v in values.split(",") if v.strip()]
    if not choices:
      raise UserError(f"--grid {key}: no values")
    if key in seen:
      raise UserError(f"--grid {key} is given twice; list all its values in one --grid {key}=v1,v2,...")
    seen.add(key)
    axes.append([(key, v.strip()) for v in choices])
  return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def _configured(args, setting: dict):
  from jxhash import settings as settings_lib
  from jxhash.methods import get_method
  s = args.settings
  spec = get_method(s.method.name)
  s = s.replace(method={"set": {**s.method.set, **setting}})
  return spec, settings_lib.method_config(spec, s)


def _load(args, options: list[str]):
  from jxhash import data as data_lib, fileio
  s = args.settings
  data_dir = fileio.resolve(s.data.dir) if s.data.dir else None
  given = {k: v for k, v in s.data.options.items()}
  extra = data_lib.parse_options(s.data.name, options)
  typed = data_lib.parse_options(s.data.name, [f"{k}={v}" for k, v in given.items() if isinstance(v, str)])
  typed.update({k: v for k, v in given.items() if not isinstance(v, str)})
  return data_lib.load(s.data.name, data_dir, split=s.data.split, seed=s.data.split_seed, **{**typed, **extra})


def _val_options(args) -> list[str]:
  if args.val_option is not None:
    return args.val_option
  return ["num_val=200"] if args.settings.data.name == "wikipedia" else []


def _options(args, num_seeds: int):
  from jxhash.training import trainer
  t = args.settings.train
  return trainer.TrainOptions(seed=t.seed, num_seeds=num_seeds, eval_every=args.settings.eval.eval_every,
                            normalize=t.normalize, progress=False)


def _valid_setting_file(old, ident: dict) -> bool:
  """A resumed sweep reuses a setting's results file only if it is this setting's, whole and sane."""
  from jxhash.runs import identity
  if not isinstance(old, dict) or identity.identity_diff(old, ident) or "val_score" not in old:
    return False
  score = old["val_score"]
  if score is None:
    return isinstance(old.get("diverged"), str)
  return isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score) \
      and 0.0 <= score <= 1.0


def run_setting(args, setting: dict, out_dir: pathlib.Path) -> dict:
  """Train one setting with val selection; its results file, reused when it is already there."""
  from jxhash.runs import identity
  from jxhash.runs import results
  from jxhash.training import trainer
  from jxhash.errors import TrainingDiverged, UserError
  spec, config = _configured(args, setting)
  data = _load(args, _val_options(args))
  if data.val.size == 0:
    raise UserError(f"dataset {data.name!r} has no val split to choose on; give --val-option (e.g. num_val=200)")
  options = _options(args, args.settings.train.seeds)
  ident = identity.run_identity(spec, config, data, options)
  path = out_dir / "settings" / f"{identity.run_name(ident)}.json"
  if path.exists():
    try:
      old = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
      old = None
    if _valid_setting_file(old, ident):
      return old
    print(f"{path}: not a valid result of this setting; training it again")
  try:
    fit = trainer.fit(spec, config, data, options)
  except TrainingDiverged as e:
    # a setting that diverges is a result of the search (its score is "failed"), not an error
    res = {**ident, "run_name": identity.run_name(ident), "setting": setting, "val_score": None,
           "diverged": str(e), "num_seeds": options.num_seeds}
    results.write(path, res)
    return res
  vals = [h["val_map"] for h in fit.history if "val_map" in h]
  res = results.build(spec, config, data, options, fit, identity=ident,
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
  defaults (after `--preset`); the data and train settings of the search (not its val carve)
  come along where they differ from the defaults.
  """
  from jxhash import config as config_lib
  from jxhash.settings import Settings
  s = args.settings
  _, base = _configured(args, {})
  _, chosen = _configured(args, best["setting"])
  picked = [k for k in best["setting"] if getattr(chosen, k) != getattr(base, k)]
  values = {k: getattr(chosen, k) for k in dict.fromkeys([*s.method.set, *picked])}
  # numbers stay numbers in the file; tuples become the `--set` text "64,32"
  values = {k: config_lib.flag_text(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}
  defaults = Settings()
  extra = {k: v for k, v in (("preset", s.method.preset), ("epochs", s.train.epochs),
                             ("batch_size", s.train.batch_size)) if v is not None}
  extra.update({k: getattr(s.data if k == "split_seed" else s.train, k) for k in ("split_seed", "normalize")
                if getattr(s.data if k == "split_seed" else s.train, k)
                != getattr(defaults.data if k == "split_seed" else defaults.train, k)})
  if not values and not extra:
    return None
  config = {"method": s.method.name, "dataset": s.data.name}
  if s.data.dir:
    # a config file's relative paths start at the checkout holding its configs/ folder; paths
    # are made absolute without following links, so a linked ../shared stays ../shared
    given = pathlib.Path(s.data.dir).expanduser()
    target = pathlib.Path(os.path.abspath(pathlib.Path(args.write_config).expanduser()))
    root = next((p.parent for p in target.parents if p.name == "configs"), None)
    config["data_dir"] = (str(given) if given.is_absolute() or root is None
                          else os.path.relpath(os.path.abspath(given), root))
  if s.data.options:
    config["data_options"] = dict(s.data.options)
  config.update(extra)
  if values:
    config["set"] = values
  chose = ", ".join(f"{k}={getattr(chosen, k)}" for k in picked) or "the defaults"
  was = ", ".join(f"{k}={getattr(base, k)}" for k in picked)
  command = "jxhash sweep " + " ".join(shlex.quote(a) for a in args.argv)
  body = textwrap.indent(table, "    ")
  return (f'''"""{s.method.name.upper()} on {s.data.name} with the setting its validation sweep chose: {chose}'''
          + (f" (defaults: {was})" if was else "") + f'''.

    jxhash train --config {args.write_config} --seeds 5

Written by the validation sweep (val score: {best["val_score"]:.4f}; the test queries never looked at):

    {command}

{body}
"""


def get_config():
  return {config!r}
''')


def sweep(args) -> dict:
  from jxhash import fileio
  from jxhash.runs import identity
  from jxhash.runs import results
  from jxhash.training import trainer
  from jxhash.errors import UserError
  workdir = fileio.require_writable_dir(args.workdir, what="--workdir")
  out_dir = fileio.require_writable_dir(workdir / args.out_dir, what="--out-dir")
  if args.write_config:
    target = fileio.require_writable_file(args.write_config, what="--write-config")
    if (target.exists() or pathlib.Path(args.write_config).is_symlink()) and not args.overwrite:
      raise UserError(f"--write-config {target} exists; choose another path or pass --overwrite")
  settings = _grid(args.grid)
  for s in settings:  # every setting must make a valid config before anything trains
    _configured(args, s)
  if args.random is not None and args.random < len(settings):
    settings = random.Random(args.sample_seed).sample(settings, args.random)
  fields = list(settings[0])
  _claim(out_dir, {"settings": args.settings.to_json(), "grid": settings, "val_option": _val_options(args),
                   "test_seeds": args.test_seeds}, args.overwrite)
  s = args.settings
  print(f"{s.method.name} on {s.data.name}: {len(settings)} setting(s) x {s.train.seeds} seed(s), chosen on val")
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
  data = _load(args, [])
  options = _options(args, args.test_seeds or s.train.seeds)
  fit = trainer.fit(spec, config, data, options)
  sweep_record = {"fields": fields, "chosen": best["setting"], "val_score": best["val_score"],
                  "val_option": _val_options(args), "settings": len(rows), "seeds_per_setting": s.train.seeds}
  res = results.build(spec, config, data, options, fit,
                      extra={"run_name": identity.run_name(identity.run_identity(spec, config, data, options)),
                             "sweep": sweep_record})
  results.write(out_dir / "test.json", res)
  std = res.get("map_std", {})
  print(f"chosen on val: {best['setting']} (val {best['val_score']:.4f}); test protocol, "
        f"{options.num_seeds} seed(s): I->T {res['map']['i2t']:.4f}" + (f" ± {std['i2t']:.4f}" if std else "")
        + f", T->I {res['map']['t2i']:.4f}" + (f" ± {std['t2i']:.4f}" if std else ""))
  return res


def _claim(out_dir: pathlib.Path, record: dict, overwrite: bool) -> None:
  """Record this sweep in out_dir/sweep.json; refuse a folder that holds another sweep's files."""
  from jxhash import fileio
  from jxhash.errors import UserError
  path = out_dir / "sweep.json"
  record = fileio.to_json(record)
  if path.is_symlink():
    raise UserError(f"{path} is a symbolic link; a sweep folder's own files are never links")
  if path.exists() and not overwrite:
    try:
      old = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
      old = None
    if old != record:
      raise UserError(f"--out-dir {out_dir} holds another sweep (its sweep.json differs: other grid or settings); "
                      "choose another --out-dir or pass --overwrite")
  elif not path.exists() and not overwrite and any((out_dir / n).exists() for n in ("summary.json", "test.json")):
    raise UserError(f"--out-dir {out_dir} holds files of a sweep this version cannot identify; "
                    "choose another --out-dir or pass --overwrite")
  fileio.atomic_write_json(path, record, what="sweep record", sort_keys=True)


class _Parser:
  def parse_args(self, argv):
    return parse_args(argv)


def main(argv=None) -> int:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  return cli.main(sweep, argv, _Parser())


if __name__ == "__main__":
  sys.exit(main())
