"""Results JSON files -> a markdown table (and PR / P@N plots).

    python experiments/report.py results/*.json                    # print the table
    python experiments/report.py results/wiki/*.json --plots plots/ # also write PNG curves
    python experiments/report.py results/wiki/*.json --readme README.md --section wikipedia
        # replace the table between <!-- results:wikipedia:start --> and ...:end --> in README.md

Each row names the settings it used: the config fields that differ from the method's
defaults, the split and the model-selection rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_results(paths) -> list[dict]:
  rows = []
  for p in paths:
    try:
      r = json.loads(pathlib.Path(p).read_text())
    except (OSError, json.JSONDecodeError) as e:
      raise SystemExit(f"error: cannot read results file {p}: {e}")
    if not {"method", "dataset", "bits", "map"} <= set(r):
      raise SystemExit(f"error: {p} is not a jxhash results file (needs method, dataset, bits, map)")
    r["_path"] = str(p)
    rows.append(r)
  return sorted(rows, key=lambda r: (r["dataset"], r["method"], r["bits"]))


def changed_settings(r: dict) -> str:
  """Config fields that differ from the method's defaults, as `key=value` (the --set syntax)."""
  from jxhash.methods import METHODS
  if "settings" in r:  # baselines outside the registry describe themselves
    return r["settings"]
  spec = METHODS.get(r["method"])
  if spec is None:
    return ""
  from jxhash.results import to_json
  defaults = to_json(dataclasses.asdict(spec.Config()))
  out = []
  for key, value in sorted(r.get("config", {}).items()):
    if key != "bits" and value != defaults.get(key):
      shown = ",".join(map(str, value)) if isinstance(value, list) else value
      out.append(f"{key}={shown}")
  return " ".join(out)


def _cell(r, d):
  value = f"{r['map'][d]:.4f}"
  std = r.get("map_std", {}).get(d)
  return value + (f" ± {std:.4f}" if std is not None else "")


def table(rows: list[dict]) -> str:
  lines = ["| dataset | method | bits | mAP I→T | mAP T→I | seeds | model | settings (--set) | train s |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    seeds = r.get("num_seeds", 1)
    lines.append(f"| {r['dataset']} | {r['method']} | {r['bits']} | {_cell(r, 'i2t')} | {_cell(r, 't2i')} | "
                 f"{seeds} | {r.get('selected', '')} | {changed_settings(r) or 'defaults'} | "
                 f"{r.get('train_time_s', '')} |")
  return "\n".join(lines)


def plots(rows: list[dict], folder: pathlib.Path) -> list[pathlib.Path]:
  """One PNG per dataset and bits: P@N and precision-recall by Hamming radius, both directions."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  folder.mkdir(parents=True, exist_ok=True)
  written = []
  groups = {}
  for r in rows:
    groups.setdefault((r["dataset"], r["bits"]), []).append(r)
  for (dataset, bits), group in sorted(groups.items()):
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    for col, d in enumerate(("i2t", "t2i")):
      for r in group:
        m = r.get("metrics", {}).get(d, {})
        if "p@n" in m:
          axes[0, col].plot(m["p@n"]["n"], m["p@n"]["precision"], marker="o", label=r["method"])
        if "pr_radius" in m:
          axes[1, col].plot(m["pr_radius"]["recall"], m["pr_radius"]["precision"], marker=".", label=r["method"])
      axes[0, col].set(xscale="log", xlabel="N", ylabel="precision@N", title=f"{d} P@N")
      axes[1, col].set(xlabel="recall", ylabel="precision", title=f"{d} PR (Hamming radius)")
      for ax in axes[:, col]:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{dataset}, {bits} bits")
    fig.tight_layout()
    path = folder / f"{dataset}-{bits}bits.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    written.append(path)
  return written


def replace_section(readme: pathlib.Path, section: str, text: str) -> None:
  start, end = f"<!-- results:{section}:start -->", f"<!-- results:{section}:end -->"
  content = readme.read_text()
  if start not in content or end not in content:
    raise SystemExit(f"error: {readme} has no {start} ... {end} markers")
  head, rest = content.split(start, 1)
  _, tail = rest.split(end, 1)
  readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main(argv=None) -> int:
  sys.path.insert(0, str(ROOT))
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("files", nargs="+", help="results JSON files")
  p.add_argument("--plots", default=None, help="folder for PNG curves")
  p.add_argument("--readme", default=None, help="markdown file whose marked section gets the table")
  p.add_argument("--section", default="main", help="marker name in --readme")
  args = p.parse_args(argv)
  rows = load_results(args.files)
  text = table(rows)
  print(text)
  if args.plots:
    for path in plots(rows, pathlib.Path(args.plots)):
      print(f"wrote {path}")
  if args.readme:
    replace_section(pathlib.Path(args.readme), args.section, text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
