"""Figures of results files: retrieval curves, mAP against code length, training curves.

Pure functions: results dicts (as `jxhash.runs.results.build` writes them and `json.load` reads
them back) in, matplotlib `Figure`s or PNG files out. matplotlib is imported only when a figure
is made; without it every function raises a one-line `UserError` naming the `plot` extra.

    from jxhash import plots
    runs = [json.load(open(p)) for p in paths]
    for path in plots.write(runs, "plots/"):
      print(path)

Figures (one PNG each, `write` names them):
  <dataset>-<bits>bits.png           P@N and precision-recall by Hamming radius, both directions
  <dataset>-map-vs-bits.png          mAP@all against code length, both directions (2+ lengths)
  <dataset>-<bits>bits-training.png  val mAP and the losses per epoch (runs with a history)

Runs that differ only in their model seed (separate files, or one file's vmapped seeds) are one
curve: the mean, with a band of ± one standard deviation over the seeds (population std, as in
the results files' `map_std`). Precision-recall curves average each seed's curve radius by
radius; the band is the spread of precision. A file of several vmapped seeds stores only the
seed-mean curves, so its seeds add no PR / P@N band (they do to mAP and training curves).

Legend labels name only what tells the curves of a figure apart: the method when methods
differ, then the settings (config fields, split, augmentation) whose values differ between that
method's curves; a label that would still be long becomes a number, explained in the legend's
title. Legends sit below the panels and the figure grows to hold them.

Chance levels (dashed grey): the precision of a random ranking is the fraction of relevant
items, P@N and PR alike; the expected mAP@all of a random ranking is `metrics.chance_map`,
computed here from what the results file keeps of the evaluation (its PR counts at the largest
radius, the number of queries and of queries without a relevant item), so it needs no labels.
"""

from __future__ import annotations

import json
import math
import pathlib
import re

import numpy as np

from jxhash.errors import UserError

DIRECTIONS = ("i2t", "t2i")
MAX_LABEL = 39
# keys that tell seeds, reruns and outputs of one setting apart, never its setting
_NOT_SETTINGS = ("seed", "num_seeds", "run_name", "name", "checkpoint")
_DPI = 80
_WIDTH = 10.0  # inches


# ------------------------------------------------------------------------------ matplotlib

def require_matplotlib():
  """(Figure, FigureCanvasAgg); a UserError naming the extra when matplotlib is missing."""
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError:
    raise UserError('plots need matplotlib, which is not installed: pip install "jxhash[plot]"') from None
  return Figure, FigureCanvasAgg


def _figure(width: float, height: float):
  # a Figure on its own Agg canvas: no pyplot, so no global state and no GUI backend
  Figure, Canvas = require_matplotlib()
  fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
  Canvas(fig)
  return fig


# ---------------------------------------------------------------------------------- series

def _show(value) -> str:
  if isinstance(value, list):
    return ",".join(map(_show, value))
  if isinstance(value, bool) or value is None:
    return str(value).lower()
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def _flat(prefix: str, value) -> dict:
  if isinstance(value, dict):
    out = {}
    for k, v in value.items():
      out.update(_flat(f"{prefix}.{k}", v))
    return out
  return {prefix: value}


def facets(r: dict, *, ignore_bits: bool = False) -> dict:
  """{facet: shown value} of what the run's setting is, besides its seed: method, config
  fields (the `--set` key=value), split fields, augmentation, normalisation, a baseline's own
  `settings`; with `ignore_bits`, not its code length."""
  out = {"method": r["method"]}
  if "settings" in r:
    out["settings"] = r["settings"]
  for key, value in _flat("config", r.get("config", {})).items():
    if key != "config.bits":
      out[key] = f"{key.split('.')[-1]}={_show(value)}"
  for key, value in _flat("split", r.get("split", {})).items():
    out[key] = f"split {key.split('.')[-1]}={_show(value)}"
  for key in ("augment", "normalize"):
    if key in r:
      out[key] = f"{key}={_show(r[key])}"
  if not ignore_bits:
    out["bits"] = f"{r['bits']} bits"
  return out


def run_seeds(r: dict) -> list:
  """The model seeds of a run: its `per_seed` entries, else seed .. seed + num_seeds - 1."""
  if isinstance(r.get("per_seed"), list):
    return [p.get("seed") for p in r["per_seed"]]
  n, seed = r.get("num_seeds", 1), r.get("seed")
  return [None if seed is None else seed + i for i in range(n)]


class Series:
  """Runs of one setting that differ only in their model seeds: one curve (mean ± std)."""

  def __init__(self, runs: list, facets_: dict):
    self.runs, self.facets = runs, facets_
    self.label = self.full_label = ""  # set by group_series

  @property
  def method(self) -> str:
    return self.runs[0]["method"]

  @property
  def num_seeds(self) -> int:
    """Seeds per code length (the most of any)."""
    counts = {}
    for r in self.runs:
      counts[r["bits"]] = counts.get(r["bits"], 0) + len(run_seeds(r))
    return max(counts.values())


def group_series(runs: list, *, ignore_bits: bool = False) -> list[Series]:
  """`runs` folded into series of one setting each (in order of first appearance).

  Runs of one setting fold when their seeds (at each code length) differ; reruns of the same
  seeds stay apart.
  """
  by_key = {}
  for r in runs:
    f = facets(r, ignore_bits=ignore_bits)
    by_key.setdefault(json.dumps(f, sort_keys=True), (f, []))[1].append(r)
  out = []
  for f, members in by_key.values():
    seeds = [(r["bits"], s) for r in members for s in run_seeds(r)]
    if any(s is None for _, s in seeds) or len(set(seeds)) < len(seeds):
      out.extend(Series([r], f) for r in members)
    else:
      out.append(Series(members, f))
  _label(out)
  return out


def _label(series: list[Series]) -> None:
  methods = {s.method for s in series}
  full = []
  for s in series:
    peers = [p.facets for p in series if p.method == s.method]
    # a config field older results files lack is not a setting that tells runs apart
    names = sorted(k for k in set().union(*peers)
                   if k != "method" and (not k.startswith("config.") or all(k in p for p in peers)))
    names.sort(key=lambda k: (k != "settings", not k.startswith("config."), k))
    parts = [s.facets.get(k, f"{k.split('.')[-1]} unset") for k in names if len({p.get(k) for p in peers}) > 1]
    head = [s.method] if len(methods) > 1 or not parts else []
    full.append(" ".join(head + [", ".join(parts)] if parts else head))
  for label in set(full):  # runs still alike (reruns): their run names
    same = [i for i, lab in enumerate(full) if lab == label]
    if len(same) > 1:
      for n, i in enumerate(same):
        full[i] += f" [{series[i].runs[0].get('run_name') or series[i].runs[0].get('name') or n + 1}]"
  counts = {s.num_seeds for s in series}
  for s, label in zip(series, full):
    s.full_label = label + (f" ({s.num_seeds} seeds)" if len(counts) > 1 and s.num_seeds > 1 else "")
  long = any(len(s.full_label) > MAX_LABEL for s in series) or len(set(full)) < len(full)
  for i, s in enumerate(series):
    s.label = s.full_label if not long else (f"{s.method} ({i + 1})" if len(methods) > 1 else f"({i + 1})")


def _key(series: list[Series]) -> str | None:
  """The legend title that explains numbered labels, or None."""
  if all(s.label == s.full_label for s in series):
    return None
  return "\n".join(f"({i + 1}) {s.full_label}" for i, s in enumerate(series))


# ---------------------------------------------------------------------------------- numbers

def _mean_std(samples) -> tuple[np.ndarray, np.ndarray]:
  """Mean and population std over the first axis, ignoring NaN (an all-NaN column: NaN)."""
  import warnings
  a = np.asarray(samples, np.float64)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": no point there
    return np.nanmean(a, axis=0), np.nanstd(a, axis=0)


def pr_by_radius(pr: dict) -> tuple[np.ndarray, np.ndarray]:
  """(precision, recall) per radius 0..K of a results file's `pr_radius`, NaN where undefined.

  Counts format: precision = retrieved_relevant / retrieved, recall = retrieved_relevant /
  retrieved_relevant(K). Files from before it hold the ratios, with precision and recall 0 at
  radii that retrieved nothing: those points are undefined (NaN) here.
  """
  if "precision" in pr:
    precision = np.asarray(pr["precision"], np.float64)
    recall = np.asarray(pr["recall"], np.float64)
    empty = (precision == 0) & (recall == 0)
    return np.where(empty, np.nan, precision), np.where(empty, np.nan, recall)
  retrieved = np.asarray(pr["retrieved"], np.float64)
  good = np.asarray(pr["retrieved_relevant"], np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    precision = np.where(retrieved > 0, good / retrieved, np.nan)
    recall = good / good[-1] if good.size and good[-1] > 0 else np.full_like(good, np.nan)
  return precision, recall


def chance(r: dict, direction: str) -> dict:
  """{"precision": p, "map": m} of a random ranking for `direction`, each only where the file
  holds what it needs (a `chance` entry, else the PR counts; old ratio files give precision).

  With N database items, Q queries, Z of them without a relevant item and R̄ the mean number
  of relevant items per query (the counts at the largest radius retrieve everything):
  precision = R̄ / N, and mAP = mean over queries of (R - 1) / (N - 1) + H_N (N - R) / (N (N - 1))
  for R > 0 (`metrics.chance_map`), which is linear in R, so Q, Z and R̄ determine it.
  """
  given = r.get("chance")
  if isinstance(given, dict) and isinstance(given.get(direction), dict):
    return dict(given[direction])
  m = r.get("metrics", {}).get(direction, {})
  pr = m.get("pr_radius")
  if not pr:
    return {}
  if "precision" in pr:
    return {"precision": float(pr["precision"][-1])} if pr["precision"] else {}
  if not pr.get("retrieved"):
    return {}
  n = float(round(pr["retrieved"][-1]))
  mean_r = float(pr["retrieved_relevant"][-1])
  out = {"precision": mean_r / n} if n > 0 else {}
  q, z = m.get("num_queries"), m.get("num_no_relevant")
  if n >= 2 and q and z is not None:
    harmonic = float(np.sum(1.0 / np.arange(1, int(n) + 1)))
    slope = 1 / (n - 1) - harmonic / (n * (n - 1))  # per relevant item
    offset = (harmonic - 1) / (n - 1)  # per query with one relevant item or more
    out["map"] = slope * mean_r + offset * (q - z) / q
  return out


def _chance_level(runs: list, direction: str, key: str) -> float | None:
  values = [c[key] for c in (chance(r, direction) for r in runs) if key in c]
  return float(np.mean(values)) if values else None


def map_samples(r: dict, direction: str) -> list:
  """A run's mAP@all per seed (its `per_seed` entries), else its (seed-mean) mAP."""
  if isinstance(r.get("per_seed"), list) and all(direction in p for p in r["per_seed"]):
    return [float(p[direction]["map"]) for p in r["per_seed"]]
  return [float(r["map"][direction])]


def history_samples(r: dict) -> dict:
  """{name: {epoch: [value per seed]}} of a run's history (its seed mean without `per_seed`)."""
  out = {}
  for entry in r.get("history") or []:
    per_seed = entry.get("per_seed") or {}
    for name, value in entry.items():
      if name in ("epoch", "stage", "per_seed") or isinstance(value, bool) or not isinstance(value, (int, float)):
        continue
      values = per_seed.get(name) or [value]
      out.setdefault(name, {}).setdefault(int(entry["epoch"]), []).extend(float(v) for v in values)
  return out


# ---------------------------------------------------------------------------------- drawing

def _band(ax, x, mean, std, style, label, *, marker=None):
  ax.plot(x, mean, **style, marker=marker, markersize=3, linewidth=1.5, label=label)
  if np.any(std > 0):
    ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.2, linewidth=0)


def _chance_line(ax, value):
  if value is not None and math.isfinite(value):
    ax.axhline(value, color="0.45", linestyle="--", linewidth=1, label="chance")


def _legend(fig, series: list[Series], *, base_height: float) -> None:
  """One legend for the figure, below the panels; the figure grows by the legend's height."""
  handles = {}
  for ax in fig.axes:
    for h, label in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(label, h)
  if not handles:
    return
  labels = list(handles)
  key = _key(series)
  font = 9
  widest = max(len(label) for label in labels) * font * 0.6 + 3.5 * font  # points: text and handle
  ncols = max(1, min(len(labels), int(fig.get_figwidth() * 72 * 0.9 // widest)))
  rows = math.ceil(len(labels) / ncols) + (key.count("\n") + 1 if key else 0)
  fig.set_figheight(base_height + rows * font * 1.6 / 72 + 0.25)
  fig.legend([handles[label] for label in labels], labels, loc="outside lower center", ncols=ncols,
             fontsize=font, frameon=False, title=key, title_fontsize=font - 1,
             alignment="left" if key else "center")


def _styles(series):
  """{id(series): line style}: the 10 colours of the cycle, then again dash-dotted, dotted."""
  return {id(s): {"color": f"C{i % 10}", "linestyle": ("-", "-.", ":")[i // 10 % 3]} for i, s in enumerate(series)}


def _title(fig, text: str, series: list[Series]) -> None:
  seeds = {s.num_seeds for s in series}
  if max(seeds) > 1:
    text += ("; mean ± std over " + (f"{seeds.pop()} seeds" if len(seeds) == 1 else "seeds"))
  fig.suptitle(text)


def curves_figure(runs: list) -> "Figure":
  """P@N and PR-by-radius panels (rows) for i2t and t2i (columns) of runs of one dataset and bits."""
  series = group_series(runs)
  fig = _figure(_WIDTH, 7.0)
  axes = fig.subplots(2, 2)
  styles = _styles(series)
  for col, d in enumerate(DIRECTIONS):
    for s in series:
      pn = [r["metrics"][d]["p@n"] for r in s.runs if "p@n" in r.get("metrics", {}).get(d, {})]
      pn = [p for p in pn if p["n"] == pn[0]["n"]] if pn else []
      if pn:
        mean, std = _mean_std([p["precision"] for p in pn])
        _band(axes[0, col], np.asarray(pn[0]["n"], np.float64), mean, std, styles[id(s)], s.label, marker="o")
      curves = [pr_by_radius(r["metrics"][d]["pr_radius"]) for r in s.runs
                if "pr_radius" in r.get("metrics", {}).get(d, {})]
      curves = [c for c in curves if c[0].size == curves[0][0].size] if curves else []
      if curves:
        precision, precision_std = _mean_std([c[0] for c in curves])
        recall, _ = _mean_std([c[1] for c in curves])
        keep = np.isfinite(precision) & np.isfinite(recall)
        _band(axes[1, col], recall[keep], precision[keep], precision_std[keep], styles[id(s)], s.label, marker=".")
    level = _chance_level(runs, d, "precision")
    for ax in axes[:, col]:
      _chance_line(ax, level)
      ax.grid(alpha=0.3)
    axes[0, col].set(xscale="log", xlabel="N", ylabel="precision@N", title=f"{d} P@N")
    axes[1, col].set(xlabel="recall", ylabel="precision", title=f"{d} PR (Hamming radius)")
  _title(fig, f"{runs[0]['dataset']}, {runs[0]['bits']} bits", series)
  _legend(fig, series, base_height=7.0)
  return fig


def map_vs_bits_figure(runs: list) -> "Figure":
  """mAP@all against code length, one panel per direction, one line per setting (of one dataset)."""
  series = group_series(runs, ignore_bits=True)
  fig = _figure(_WIDTH, 4.0)
  axes = fig.subplots(1, 2)
  styles = _styles(series)
  all_bits = sorted({r["bits"] for r in runs})
  for ax, d in zip(axes, DIRECTIONS):
    for s in series:
      bits = sorted({r["bits"] for r in s.runs})
      stats = [_mean_std([v for r in s.runs if r["bits"] == b for v in map_samples(r, d)]) for b in bits]
      mean, std = (np.array([m for m, _ in stats]), np.array([sd for _, sd in stats]))
      # a single file of several seeds without per-seed entries still has its map_std
      for i, b in enumerate(bits):
        same = [r for r in s.runs if r["bits"] == b]
        if len(same) == 1 and "per_seed" not in same[0] and "map_std" in same[0]:
          std[i] = same[0]["map_std"].get(d, 0.0)
      _band(ax, np.asarray(bits, np.float64), mean, std, styles[id(s)], s.label, marker="o")
    _chance_line(ax, _chance_level(runs, d, "map"))
    ax.set(xscale="log", xlabel="bits", ylabel="mAP@all", title=f"{d} mAP")
    ax.set_xticks(all_bits, [str(b) for b in all_bits])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
  _title(fig, f"{runs[0]['dataset']}: mAP against code length", series)
  _legend(fig, series, base_height=4.0)
  return fig


def training_figure(runs: list) -> "Figure | None":
  """Val mAP and each logged loss per epoch, one panel each (with several methods only the
  phases' total losses); None without a history."""
  series = [s for s in group_series(runs) if any(r.get("history") for r in s.runs)]
  if not series:
    return None
  samples = {}
  for s in series:
    merged = {}
    for r in s.runs:
      for name, by_epoch in history_samples(r).items():
        for epoch, values in by_epoch.items():
          merged.setdefault(name, {}).setdefault(epoch, []).append(values)
    samples[id(s)] = merged
  names = sorted({n for m in samples.values() for n in m}, key=lambda n: (n != "val_map", n))
  if len({s.method for s in series}) > 1:
    # methods share no loss terms: their phase totals (`<phase>/loss`, `.../gate_loss`) compare
    # training progress; the terms stay in TensorBoard and in single-method figures
    names = [n for n in names if n == "val_map" or n.endswith("loss")]
  ncols = min(3, len(names))
  nrows = math.ceil(len(names) / ncols)
  base = 3.0 * nrows + 0.4
  fig = _figure(max(_WIDTH, 3.6 * ncols), base)
  axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
  styles = _styles(series)
  for ax, name in zip(axes, names):
    for s in series:
      by_epoch = samples[id(s)].get(name)
      if not by_epoch:
        continue
      epochs = sorted(by_epoch)
      # seeds of one file are samples; seed-mean curves of several files are too
      stats = [_mean_std([v for values in by_epoch[e] for v in values]) for e in epochs]
      _band(ax, np.asarray(epochs, np.float64), np.array([m for m, _ in stats]), np.array([sd for _, sd in stats]),
            styles[id(s)], s.label, marker="o" if name == "val_map" else None)
    ax.set(xlabel="epoch", title="val mAP (mean of i2t, t2i)" if name == "val_map" else name)
    ax.grid(alpha=0.3)
  for ax in axes[len(names):]:
    ax.set_visible(False)
  _title(fig, f"{runs[0]['dataset']}, {runs[0]['bits']} bits: training", series)
  _legend(fig, series, base_height=base)
  return fig


# ------------------------------------------------------------------------------------ files

def _safe(dataset: str) -> str:
  # the dataset name comes from a JSON file: keep it from naming a path elsewhere
  return re.sub(r"[^A-Za-z0-9_.-]", "_", dataset).lstrip(".") or "dataset"


def figure_names(runs: list) -> dict:
  """{file name: (kind, dataset, bits or None)} of the figures `write` makes; a UserError if
  two datasets would share a file name."""
  out, owner = {}, {}
  by_dataset = {}
  for r in runs:
    by_dataset.setdefault(r["dataset"], set()).add(r["bits"])
  for dataset in sorted(by_dataset):
    safe = _safe(dataset)
    if safe in owner:
      raise UserError(f"datasets {owner[safe]!r} and {dataset!r} would both be plotted to {safe}-*.png")
    owner[safe] = dataset
    for bits in sorted(by_dataset[dataset]):
      out[f"{safe}-{bits}bits.png"] = ("curves", dataset, bits)
      if any(r.get("history") for r in runs if r["dataset"] == dataset and r["bits"] == bits):
        out[f"{safe}-{bits}bits-training.png"] = ("training", dataset, bits)
    if len(by_dataset[dataset]) > 1:
      out[f"{safe}-map-vs-bits.png"] = ("bits", dataset, None)
  return out


def write(runs: list, folder) -> list[pathlib.Path]:
  """Write every figure of `runs` into `folder` (atomically, PNG); the paths written."""
  from jxhash import fileio
  folder = pathlib.Path(folder)
  require_matplotlib()
  written = []
  for name, (kind, dataset, bits) in figure_names(runs).items():
    mine = [r for r in runs if r["dataset"] == dataset and (bits is None or r["bits"] == bits)]
    make = {"curves": curves_figure, "bits": map_vs_bits_figure, "training": training_figure}[kind]
    fig = make(mine)
    path = folder / name
    with fileio.atomic_output(path, what="plot") as tmp:
      fig.savefig(tmp, format="png")
    written.append(path)
  return written
