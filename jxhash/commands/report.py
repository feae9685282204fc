"""Results JSON files -> a markdown table (and figures, and the README's tables).

    jxhash report results/*.json                    # print the table
    jxhash report results/wiki/*.json --plots plots/ # also write the figures
    jxhash report results/wiki/*.json --update-readme README.md
        # replace each dataset's table between <!-- results:<dataset>:start --> and ...:end -->
    jxhash report results/wiki/*.json --readme README.md --section wikipedia
        # the same for one named section, holding every given run

--plots writes the figures of `jxhash.plots` (pip install "jxhash[plot]"): per dataset and
code length P@N and precision-recall curves and the training curves, and mAP against code
length per dataset; seeds of one setting are one curve with a ± std band (docs/plots-and-logs.md).

A README table is only ever rewritten by --update-readme or --readme, and neither drops a row of
the existing table that the given results do not produce again (matched by dataset, method,
bits and settings): it names those rows and stops, unless --force.

Each row names the settings it used: the config fields that differ from the method's
defaults, the split and the model-selection rule. Runs compared side by side (same dataset and
bits) are labelled by their method plus whatever tells them apart from the other runs of that
method there (seeds, config values, split, augmentation), so the table row and the plot legend
of a run carry the same label.

Every input is checked before anything is written: a results file that is not a jxhash results
object (or has a field of the wrong type, a NaN where a number is read, an mAP or a precision
outside [0, 1], a dataset name that is not a plain name), README markers that are missing,
doubled or out of order, README rows that would be dropped, a --readme or --plots location that
cannot be written.
Each is one line `error: ...` on stderr naming the file and field, exit code 2. The README and
the plots are replaced atomically (a full disk leaves the previous file).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import sys


DIRECTIONS = ("i2t", "t2i")
# Real results files are kilobytes to a few megabytes (per-epoch history, per-seed metrics);
# anything far larger is the wrong file, and reading it whole would only waste memory.
MAX_RESULTS_BYTES = 64 * 2**20
SECTION_NAME = re.compile(r"[A-Za-z0-9_.-]+")
ANY_MARKER = re.compile(r"<!-- results:[^ ]*:(?:start|end) -->")
PLAIN_NAME_BREAKERS = re.compile(r"[|\x00-\x1f\x7f]|<!--|-->")


# ------------------------------------------------------------------------ reading results

def _json_type(value) -> str:
  if isinstance(value, bool):
    return "true/false"
  names = {dict: "object", list: "list", str: "string", int: "number", float: "number", type(None): "null"}
  return names.get(type(value), type(value).__name__)


def _show_value(value) -> str:
  text = json.dumps(value)  # parsed JSON (NaN included) always dumps
  return text if len(text) <= 40 else text[:37] + "..."


class _Checker:
  """Type checks of one results file's fields; failures are UserErrors naming file and field."""

  def __init__(self, path: pathlib.Path):
    self.path = path

  def fail(self, field: str, problem: str):
    from jxhash.errors import UserError
    raise UserError(f"results file {self.path}: field '{field}' {problem}")

  def wrong(self, field: str, expected: str, value):
    if isinstance(value, float) and not math.isfinite(value):  # JSON's NaN / Infinity extension
      self.fail(field, f"must be {expected}, got {_show_value(value)}")
    self.fail(field, f"must be {expected}, got {_json_type(value)} {_show_value(value)}")

  def require(self, obj: dict, key: str, *, prefix: str = ""):
    if key not in obj:
      self.fail(prefix + key, "is missing (a jxhash results file has method, dataset, bits and map "
                "with i2t and t2i)")
    return obj[key]

  def string(self, obj: dict, key: str, *, required: bool = False):
    if required:
      value = self.require(obj, key)
      if not isinstance(value, str) or not value.strip():
        self.wrong(key, "a non-empty string", value)
    elif key in obj and not isinstance(obj[key], str):
      self.wrong(key, "a string", obj[key])

  def number(self, value, field: str, *, minimum: float | None = None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      self.wrong(field, "a finite number", value)
    if minimum is not None and value < minimum:
      self.fail(field, f"must be >= {minimum}, got {value}")

  def fraction(self, value, field: str, what: str):
    """A finite number in [0, 1] (an mAP, a precision); `what` names it in the message."""
    self.number(value, field)
    if not 0 <= value <= 1:
      self.fail(field, f"must be between 0 and 1 (it is {what}), got {value}")

  def integer(self, value, field: str, *, minimum: int | None = None):
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
      self.wrong(field, "an integer" if minimum is None else f"an integer >= {minimum}", value)

  def sequence(self, value, field: str) -> list:
    if not isinstance(value, list):
      self.wrong(field, "a list", value)
    return value

  def mapping(self, value, field: str) -> dict:
    if not isinstance(value, dict):
      self.wrong(field, "an object", value)
    return value

  def numbers(self, value, field: str) -> list:
    if not isinstance(value, list):
      self.wrong(field, "a list of numbers", value)
    for i, v in enumerate(value):
      self.number(v, f"{field}[{i}]")
    return value

  def same_length(self, obj: dict, keys, field: str):
    lengths = {key: len(self.numbers(obj.get(key), f"{field}.{key}")) for key in keys}
    if len(set(lengths.values())) > 1:
      self.fail(field, "lists differ in length: " + ", ".join(f"{k} {n}" for k, n in lengths.items()))


def _read_json(path: pathlib.Path):
  from jxhash import fileio
  from jxhash.errors import UserError
  path = fileio.require_readable_file(path, what="results file")
  try:
    size = path.stat().st_size
    if size > MAX_RESULTS_BYTES:
      raise UserError(f"results file {path} is {size / 2**20:.1f} MiB, more than the "
                      f"{MAX_RESULTS_BYTES / 2**20:g} MiB a results file can be; is it the right file?")
    raw = path.read_bytes()
  except OSError as e:
    raise UserError(f"cannot read results file {path}: {fileio.describe_os_error(e)}") from None
  try:
    return path, json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise UserError(f"results file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
  except json.JSONDecodeError as e:
    raise UserError(f"results file {path} is not valid JSON: {e}") from None
  except RecursionError:
    raise UserError(f"results file {path} nests JSON too deeply to be a results file") from None


def check_results(path: pathlib.Path, r) -> dict:
  """`r` (the parsed JSON of `path`) if every field the report reads has the right type."""
  from jxhash.errors import UserError
  if not isinstance(r, dict):
    raise UserError(f"results file {path} holds a JSON {_json_type(r)}, not a results object "
                    "(one object with method, dataset, bits, map, ...)")
  c = _Checker(path)
  c.string(r, "method", required=True)
  c.string(r, "dataset", required=True)
  if PLAIN_NAME_BREAKERS.search(r["dataset"]):
    # it names a README section and a table cell: a marker, a pipe or a line break would corrupt them
    c.wrong("dataset", "a plain name (no '|', '<!--', '-->' or line break)", r["dataset"])
  c.integer(c.require(r, "bits"), "bits", minimum=1)
  c.mapping(c.require(r, "map"), "map")
  for d in DIRECTIONS:
    c.fraction(c.require(r["map"], d, prefix="map."), f"map.{d}", "an mAP")
  if "map_std" in r:
    c.mapping(r["map_std"], "map_std")
    for d, v in r["map_std"].items():
      c.number(v, f"map_std.{d}", minimum=0)
  if "num_seeds" in r:
    c.integer(r["num_seeds"], "num_seeds", minimum=1)
  if r.get("seed") is not None:
    c.integer(r["seed"], "seed")
  if r.get("train_time_s") is not None:
    c.number(r["train_time_s"], "train_time_s", minimum=0)
  for key in ("config", "split"):
    if key in r:
      c.mapping(r[key], key)
  for key in ("settings", "selected", "augment", "normalize", "name", "run_name"):
    c.string(r, key)
  if "metrics" in r:
    for d, m in c.mapping(r["metrics"], "metrics").items():
      c.mapping(m, f"metrics.{d}")
      if "map" in m:
        c.fraction(m["map"], f"metrics.{d}.map", "an mAP")
      if "p@n" in m:
        c.same_length(c.mapping(m["p@n"], f"metrics.{d}.p@n"), ("n", "precision"), f"metrics.{d}.p@n")
        for i, v in enumerate(m["p@n"]["precision"]):
          c.fraction(v, f"metrics.{d}.p@n.precision[{i}]", "a precision")
      if "pr_radius" in m:
        pr = c.mapping(m["pr_radius"], f"metrics.{d}.pr_radius")
        # files written before the counts format hold precision and recall per radius
        keys = ("radius", "precision", "recall") if "precision" in pr else ("radius", "retrieved",
                                                                            "retrieved_relevant")
        c.same_length(pr, keys, f"metrics.{d}.pr_radius")
        field = f"metrics.{d}.pr_radius"
        if "precision" in pr:
          for key in ("precision", "recall"):
            for i, v in enumerate(pr[key]):
              c.fraction(v, f"{field}.{key}[{i}]", f"a {key}")
        else:
          for i, (good, got) in enumerate(zip(pr["retrieved_relevant"], pr["retrieved"])):
            if not 0 <= good <= got * (1 + 1e-9):
              c.fail(f"{field}.retrieved_relevant[{i}]", f"must be between 0 and retrieved[{i}] = {got} "
                     f"(a precision in [0, 1]), got {good}")
  if "per_seed" in r:
    for i, p in enumerate(c.sequence(r["per_seed"], "per_seed")):
      c.mapping(p, f"per_seed[{i}]")
      for d in DIRECTIONS:
        if d in p:
          c.fraction(c.require(c.mapping(p[d], f"per_seed[{i}].{d}"), "map", prefix=f"per_seed[{i}].{d}."),
                     f"per_seed[{i}].{d}.map", "an mAP")
  if "history" in r:
    for i, entry in enumerate(c.sequence(r["history"], "history")):
      c.mapping(entry, f"history[{i}]")
      c.integer(c.require(entry, "epoch", prefix=f"history[{i}]."), f"history[{i}].epoch", minimum=0)
      for key, value in entry.items():
        if key == "per_seed":
          for name, values in c.mapping(value, f"history[{i}].per_seed").items():
            c.numbers(values, f"history[{i}].per_seed.{name}")
        elif key != "stage":
          c.number(value, f"history[{i}].{key}")
  return r


def load_results(paths) -> list[dict]:
  """The checked results of `paths` (each file once), sorted for the table."""
  from jxhash import fileio
  rows, seen = [], set()
  for p in paths:
    resolved = fileio.resolve(p)
    if resolved in seen:
      continue
    seen.add(resolved)
    path, r = _read_json(resolved)
    r = check_results(path, r)
    r["_path"] = str(path)
    rows.append(r)
  return sorted(rows, key=lambda r: (r["dataset"], r["method"], r["bits"], r.get("num_seeds", 1),
                                     r.get("seed") if r.get("seed") is not None else -1, r["_path"]))


# --------------------------------------------------------------------------------- labels

def _config_value(value) -> str:
  if isinstance(value, list):
    return ",".join(map(_config_value, value))
  if isinstance(value, float):
    return f"{value:.6g}"
  return "none" if value is None else str(value)


def changed_settings(r: dict) -> str:
  """Config fields that differ from the method's defaults, as `key=value` (the --set syntax)."""
  import dataclasses
  from jxhash.methods import METHODS
  if "settings" in r:  # baselines outside the registry describe themselves
    return r["settings"]
  spec = METHODS.get(r["method"])
  if spec is None:
    return ""
  from jxhash.runs.results import to_json
  defaults = to_json(dataclasses.asdict(spec.Config()))
  out = []
  for key, value in sorted(r.get("config", {}).items()):
    if key != "bits" and value != defaults.get(key):
      out.append(f"{key}={_config_value(value)}")
  return " ".join(out)


def _seeds(r: dict) -> str:
  n, seed = r.get("num_seeds", 1), r.get("seed")
  if n == 1:
    return "1 seed" if seed is None else f"seed {seed}"
  return f"{n} seeds" if seed is None else f"{n} seeds from {seed}"


def _facets(r: dict) -> dict:
  """What may tell two runs of one method apart, as {name: shown value}."""
  out = {"seeds": _seeds(r)}
  if "settings" in r:  # a baseline's own description covers its config
    out["settings"] = r["settings"]
  else:
    for key, value in r.get("config", {}).items():
      if key != "bits":
        out[f"config.{key}"] = f"{key}={_config_value(value)}"
  for key, value in r.get("split", {}).items():
    out[f"split.{key}"] = f"split {key}={_config_value(value)}"
  for key in ("augment", "normalize"):
    if key in r:
      out[key] = f"{key}={r[key]}"
  return out


def run_labels(group: list[dict]) -> list[str]:
  """One label per run of `group` (runs shown side by side: one dataset and bits).

  The label is the method, followed in parentheses by each facet (seeds, a config value, the
  split, the augmentation) whose value differs between this method's runs in the group, so a
  1-seed and a 3-seed run read "dcmh (seed 0)" and "dcmh (3 seeds from 0)", and a method with
  one run is just its name. A config field missing from some of the method's files (they
  predate it) is left out. Runs these facets cannot tell apart (reruns) get the results file's
  run name (`run_name`, else `name`) appended, or the file name when they have none.
  """
  facets = [_facets(r) for r in group]
  labels = []
  for r, mine in zip(group, facets):
    peers = [f for o, f in zip(group, facets) if o["method"] == r["method"]]
    # a config field that some results files predate (written before the field existed) is not a
    # setting that tells runs apart; other facets missing from a file show as "unset"
    names = sorted((k for k in set().union(*peers) if not k.startswith("config.") or all(k in f for f in peers)),
                   key=lambda k: (k != "seeds", k != "settings", k))
    shown = [mine.get(k, f"{k.split('.')[-1]} unset") for k in names
             if len({f.get(k) for f in peers}) > 1]
    labels.append(r["method"] + (f" ({', '.join(shown)})" if shown else ""))
  for label in set(labels):
    same = [i for i, lab in enumerate(labels) if lab == label]
    if len(same) < 2:
      continue
    tags = [group[i].get("run_name") or group[i].get("name") for i in same]
    if None in tags or len(set(tags)) < len(tags):
      stems = [pathlib.Path(group[i]["_path"]).stem for i in same]
      tags = stems if len(set(stems)) == len(stems) else [group[i]["_path"] for i in same]
    for i, tag in zip(same, tags):
      labels[i] = f"{labels[i]} [{tag}]"
  return labels


def groups(rows: list[dict]) -> dict:
  """{(dataset, bits): [row, ...]}: the runs a table block or a plot compares."""
  out = {}
  for r in rows:
    out.setdefault((r["dataset"], r["bits"]), []).append(r)
  return out


def labelled(rows: list[dict]) -> dict:
  """{id(row): label} for every row, labels made within each (dataset, bits) group."""
  out = {}
  for group in groups(rows).values():
    out.update({id(r): label for r, label in zip(group, run_labels(group))})
  return out


# ---------------------------------------------------------------------------------- table

def _md(text) -> str:
  """A markdown table cell: a `|` or a line break in a name would split the row, and a `<!--`
  could open a README marker (`&lt;` shows as `<`)."""
  return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ").replace("<", "&lt;")


def _cell(r, d):
  value = f"{r['map'][d]:.4f}"
  std = r.get("map_std", {}).get(d)
  return value + (f" ± {std:.4f}" if std is not None else "")


def table(rows: list[dict]) -> str:
  labels = labelled(rows)
  lines = ["| dataset | method | bits | mAP I→T | mAP T→I | seeds | model | settings (--set) | train s | on |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    train_s = r.get("train_time_s")
    # times from different machines are not comparable: the row says where it ran
    device = (r.get("environment") or {}).get("device", "")
    cells = [r["dataset"], labels[id(r)], r["bits"], _cell(r, "i2t"), _cell(r, "t2i"), r.get("num_seeds", 1),
             r.get("selected", ""), changed_settings(r) or "defaults", "" if train_s is None else train_s, device]
    lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
  return "\n".join(lines)


# ---------------------------------------------------------------------------------- plots

def plots(rows: list[dict], folder: pathlib.Path) -> list[pathlib.Path]:
  """Every figure of `jxhash.plots` for `rows`, as PNG files in `folder`."""
  from jxhash import plots as plots_lib
  return plots_lib.write(rows, folder)


# --------------------------------------------------------------------------------- README

def _markers(section: str) -> tuple[str, str]:
  return f"<!-- results:{section}:start -->", f"<!-- results:{section}:end -->"


def replace_section(content: str, section: str, text: str, *, where: str) -> str:
  """`content` with the part between the section's markers replaced by `text`.

  A UserError (naming `where`) unless each marker occurs exactly once, start before end, with no
  other results marker between them (rewriting would delete it).
  """
  from jxhash.errors import UserError
  start, end = _markers(section)
  for marker in (start, end):
    count = content.count(marker)
    if count == 0:
      raise UserError(f"{where} has no {marker} marker (add {start} and {end} around the table)")
    if count > 1:
      raise UserError(f"{where} has {marker} {count} times; it must occur exactly once")
  i, j = content.index(start), content.index(end)
  if j < i:
    raise UserError(f"{where} has {end} before {start}")
  inner = ANY_MARKER.search(content, i + len(start), j)
  if inner:
    raise UserError(f"{where} has {inner.group(0)} inside the {section!r} section")
  return f"{content[:i]}{start}\n{text}\n{content[j:]}"


def check_readme(path, what: str) -> tuple[pathlib.Path, str]:
  """The resolved README (`what`: the flag naming it) and its text, if it exists and is writable."""
  from jxhash import fileio
  from jxhash.errors import UserError
  readme = fileio.require_readable_file(path, what=what)
  fileio.require_writable_file(readme, what=what)
  if not os.access(readme, os.W_OK):
    raise UserError(f"{what} {readme} is read-only")
  try:
    content = readme.read_bytes().decode("utf-8")
  except OSError as e:
    raise UserError(f"cannot read {what} {readme}: {fileio.describe_os_error(e)}") from None
  except UnicodeDecodeError as e:
    raise UserError(f"{what} {readme} is not UTF-8 text ({e.reason} at byte {e.start})") from None
  return readme, content


def _cells(line: str) -> list[str]:
  """The cells of a markdown table row, unescaped as `_md` escaped them."""
  parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
  return [p.strip().replace("\\|", "|").replace("&lt;", "<") for p in parts]


def row_keys(text: str) -> list[tuple]:
  """(dataset, method, bits, settings) of each row of the results table in `text` (rows of a
  table whose header lacks those columns, and text outside tables, have none)."""
  keys, columns = [], None
  for line in text.splitlines():
    if not line.lstrip().startswith("|"):
      columns = None
      continue
    cells = _cells(line)
    if columns is None:  # a header
      names = [c.split(" (")[0] for c in cells]
      columns = [names.index(n) if n in names else None for n in ("dataset", "method", "bits", "settings")]
      continue
    if None in columns or set("".join(cells)) <= set("-: ") or len(cells) <= max(columns):
      continue  # the separator row, or a table of something else
    dataset, label, bits, settings = (cells[i] for i in columns)
    # the method cell is a label, "dcmh (epochs=300)": its setting is in the settings column
    keys.append((dataset, re.split(r" [(\[]", label, maxsplit=1)[0], bits, settings))
  return keys


def _show_key(key: tuple) -> str:
  dataset, method, bits, settings = key
  return f"{dataset} {method} {bits} bits ({settings})"


def new_readme(content: str, sections: dict, *, where: str, force: bool) -> str:
  """`content` with each {section: table} replaced, refusing (UserError, unless `force`) to
  drop a row of an existing table whose (dataset, method, bits, settings) no new row has."""
  from jxhash.errors import UserError
  for section, text in sections.items():
    start, end = _markers(section)
    replace_section(content, section, "", where=where)  # the markers are checked first
    old = content[content.index(start) + len(start):content.index(end)]
    kept = set(row_keys(text))
    dropped = sorted({k for k in row_keys(old) if k not in kept})
    if dropped and not force:
      shown = "; ".join(_show_key(k) for k in dropped[:5])
      shown += f"; and {len(dropped) - 5} more" if len(dropped) > 5 else ""
      raise UserError(f"{where}: the new {section!r} table would drop {len(dropped)} row(s) that these results "
                      f"do not give: {shown}; pass their results files too, or --force to drop them")
    content = replace_section(content, section, text, where=where)
  return content


def readme_sections(rows: list[dict], args) -> dict:
  """{section: table text} to write: one section of every row (--readme --section), or one per
  dataset (--update-readme)."""
  from jxhash.errors import UserError
  if args.readme:
    return {args.section: table(rows)}
  out = {}
  for dataset in sorted({r["dataset"] for r in rows}):
    if not SECTION_NAME.fullmatch(dataset):
      raise UserError(f"dataset {dataset!r} cannot name a README section (letters, digits, '_', '.' or '-'); "
                      "use --readme FILE --section NAME")
    out[dataset] = table([r for r in rows if r["dataset"] == dataset])
  return out


# ----------------------------------------------------------------------------------- main

def run(args) -> None:
  from jxhash import fileio
  from jxhash.errors import UserError
  if not SECTION_NAME.fullmatch(args.section):
    raise UserError(f"--section must be letters, digits, '_', '.' or '-', got {args.section!r}")
  if args.readme and args.update_readme:
    raise UserError("--readme and --update-readme both name a README to write; give one")
  flag = "--readme" if args.readme else "--update-readme"
  # Every output location and every input is checked before anything is written.
  readme = check_readme(args.readme or args.update_readme, flag) if (args.readme or args.update_readme) else None
  if readme is not None and args.readme:
    replace_section(readme[1], args.section, "", where=f"--readme {readme[0]}")  # markers, before reading results
  folder = fileio.require_writable_dir(args.plots, what="--plots folder") if args.plots else None
  if folder is not None:
    from jxhash import plots as plots_lib
    plots_lib.require_matplotlib()
  rows = load_results(args.files)
  text = table(rows)
  if folder is not None:
    plots_lib.figure_names(rows)  # two datasets sharing a file name
  new = None
  if readme is not None:
    new = new_readme(readme[1], readme_sections(rows, args), where=f"{flag} {readme[0]}", force=args.force)
  print(text)
  if folder is not None:
    for path in plots(rows, folder):
      print(f"wrote {path}")
  if readme is not None:
    path = readme[0]
    fileio.atomic_write(path, new, what=flag)
    sections = [args.section] if args.readme else sorted({r["dataset"] for r in rows})
    print(f"wrote the {', '.join(map(repr, sections))} section{'s' * (len(sections) > 1)} of {path}")


EXAMPLES = ["jxhash report results/*.json --plots plots/",
            "jxhash report results/reproduce/wikipedia/*.json --update-readme README.md"]


def main(argv=None) -> int:
  from jxhash.commands import flags
  p = flags.parser(__doc__.split("\n")[0], EXAMPLES)
  p.add_argument("files", nargs="+", help="results JSON files")
  p.add_argument("--plots", default=None, help="folder for the PNG figures (needs jxhash[plot])")
  p.add_argument("--update-readme", default=None, metavar="FILE",
                 help="replace each dataset's table in FILE (between <!-- results:<dataset>:start/end --> markers)")
  p.add_argument("--readme", default=None, help="markdown file whose --section gets the table of every given run")
  p.add_argument("--section", default="main", help="marker name in --readme")
  p.add_argument("--force", action="store_true", help="let a README update drop rows these results do not give")
  args = p.parse_args(argv)
  from jxhash.errors import exit_code
  return exit_code(run, args)


if __name__ == "__main__":
  sys.exit(main())
