"""jxhash.plots: figures of seed runs and of methods × code lengths with legends inside the saved
figure and short distinct labels, seeds folded into mean ± std, chance levels equal to
`metrics.chance_map`, and a one-line error without matplotlib."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from jxhash import metrics, plots
from jxhash.training import evaluation
from jxhash.runs import results
from jxhash.errors import UserError

pytest.importorskip("matplotlib")

DATASET = "synthetic"
LABELS = (np.random.default_rng(0).random((360, 6)) < 0.25).astype(np.float32)
QUERY, DB = LABELS[:60], LABELS[60:]
CONFIG = {"epochs": 20, "batch_size": 64, "lr": 0.01, "image_hidden": [64], "init": "default"}


def _codes(labels, bits, quality, rng, projection):
  signal = labels @ projection
  return np.where(signal + rng.normal(0, 1 / quality, signal.shape) > 0.5, 1, -1).astype(np.int8)


def fake_run(method="dcmh", bits=16, seed=0, num_seeds=1, quality=1.0, epochs=20, **config) -> dict:
  """A results dict as `results.build` writes it and `json.load` reads it back, with metrics
  of real codes (labels projected plus noise; larger `quality`, better codes)."""
  projection = np.random.default_rng(len(method) * 1000 + bits).normal(0, 1, (6, bits))
  per_seed = []
  for s in range(seed, seed + num_seeds):
    rng = np.random.default_rng(s)
    q = _codes(QUERY, bits, quality, rng, projection)
    d = _codes(DB, bits, quality, rng, projection)
    per_seed.append({"i2t": metrics.evaluate(q, d, QUERY, DB, top_k=(50,), pn=(1, 5, 10, 20, 50, 100, 200)),
                     "t2i": metrics.evaluate(d[:60], q, DB[:60], QUERY, top_k=(50,), pn=(1, 5, 10, 20, 50))})
  final = evaluation.average_over_seeds(per_seed)
  history = []
  for e in range(1, epochs + 1):
    losses = {f"{m}/loss": [2.0 / e ** 0.5 + 0.05 * (seed + k) + 0.1 * (m == "text") for k in range(num_seeds)]
              for m in ("image", "text")}
    entry = {"epoch": e, "stage": "train", **{k: float(np.mean(v)) for k, v in losses.items()}}
    if e % 5 == 0:
      losses["val_map"] = [0.3 + 0.01 * e * quality + 0.01 * (seed + k) for k in range(num_seeds)]
      entry["val_map"] = float(np.mean(losses["val_map"]))
    if num_seeds > 1:
      entry["per_seed"] = losses
    history.append(entry)
  r = {"method": method, "dataset": DATASET, "config": {"bits": bits, **CONFIG, "epochs": epochs, **config},
       "seed": seed, "num_seeds": num_seeds, "split": {"rule": "random", "seed": 0}, "normalize": "standardize",
       "augment": "none", "bits": bits, "map": {d: final[d]["map"] for d in ("i2t", "t2i")}, "metrics": final,
       "selected": "best-val@20", "train_time_s": 3.5, "history": history,
       "run_name": f"{method}-{DATASET}-{bits}bits-seed{seed}x{num_seeds}"}
  if num_seeds > 1:
    r["map_std"] = {d: final[d]["map_std"] for d in ("i2t", "t2i")}
    scalars = [{d: results.scalar_metrics(p[d]) for d in ("i2t", "t2i")} for p in per_seed]
    r["seed_stats"] = results.seed_statistics(scalars)
    r["per_seed"] = [{"seed": seed + i, **p} for i, p in enumerate(scalars)]
  return json.loads(json.dumps(results.to_json(r)))


FIVE_SEEDS = [fake_run(seed=s) for s in range(5)]
GRID = [fake_run(method=m, bits=b, seed=0, num_seeds=3, quality=q)
        for m, q in (("dcmh", 1.0), ("dcph", 1.5), ("uchm", 0.7)) for b in (16, 32, 64)]


def _legends(fig):
  return list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]


def _check_layout(fig, path):
  """Every legend inside the figure as saved (the saved PNG has the figure's own size)."""
  from PIL import Image
  fig.canvas.draw()
  legends = _legends(fig)
  assert legends
  box = fig.bbox
  for legend in legends:
    extent = legend.get_window_extent()
    assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, (extent, box)
    assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, (extent, box)
    # and it does not cover a panel
    for ax in fig.axes:
      if ax.get_visible():
        assert not extent.overlaps(ax.get_window_extent()), (legend, ax.get_title())
  with Image.open(path) as image:
    assert image.size == (round(box.width), round(box.height))
  labels = [t.get_text() for legend in legends for t in legend.get_texts()]
  assert len(labels) == len(set(labels)) and all(len(label) < 40 for label in labels), labels
  return labels


@pytest.mark.slow  # renders and saves several figures
def test_five_seeds_of_one_method_fold_into_one_curve_with_a_band(tmp_path):
  written = plots.write(FIVE_SEEDS, tmp_path)
  assert sorted(p.name for p in written) == ["synthetic-16bits-training.png", "synthetic-16bits.png"]
  assert all(p.stat().st_size > 1000 for p in written)
  fig = plots.curves_figure(FIVE_SEEDS)
  fig.savefig(tmp_path / "again.png")
  labels = _check_layout(fig, tmp_path / "again.png")
  assert labels == ["dcmh", "chance"]
  assert "mean ± std over 5 seeds" in fig.get_suptitle()
  pn_axis = fig.axes[0]
  (line,) = [l for l in pn_axis.get_lines() if l.get_label() == "dcmh"]
  expected = np.mean([r["metrics"]["i2t"]["p@n"]["precision"] for r in FIVE_SEEDS], axis=0)
  np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
  (band,) = pn_axis.collections
  spread = np.std([r["metrics"]["i2t"]["p@n"]["precision"] for r in FIVE_SEEDS], axis=0)
  top = band.get_paths()[0].vertices[:, 1].max()
  assert top == pytest.approx((expected + spread).max(), rel=1e-9)
  training = plots.training_figure(FIVE_SEEDS)
  training.savefig(tmp_path / "training.png")
  assert _check_layout(training, tmp_path / "training.png") == ["dcmh"]
  assert [ax.get_title() for ax in training.axes if ax.get_visible()] == ["val mAP (mean of i2t, t2i)",
                                                                           "image/loss", "text/loss"]
  (loss,) = training.axes[1].get_lines()
  np.testing.assert_allclose(loss.get_ydata(), [np.mean([r["history"][e]["image/loss"] for r in FIVE_SEEDS])
                                                for e in range(20)], rtol=1e-12)


@pytest.mark.slow  # renders and saves several figures
def test_three_methods_at_three_lengths(tmp_path):
  written = plots.write(GRID, tmp_path)
  names = sorted(p.name for p in written)
  assert names == sorted(["synthetic-map-vs-bits.png"] + [f"synthetic-{b}bits{t}.png" for b in (16, 32, 64)
                                                          for t in ("", "-training")])
  for maker in (plots.map_vs_bits_figure, lambda runs: plots.curves_figure([r for r in runs if r["bits"] == 32]),
                lambda runs: plots.training_figure([r for r in runs if r["bits"] == 32])):
    fig = maker(GRID)
    fig.savefig(tmp_path / "check.png")
    labels = _check_layout(fig, tmp_path / "check.png")
    assert {"dcmh", "dcph", "uchm"} <= set(labels)
  fig = plots.map_vs_bits_figure(GRID)
  i2t = fig.axes[0]
  (line,) = [l for l in i2t.get_lines() if l.get_label() == "dcph"]
  np.testing.assert_array_equal(line.get_xdata(), [16, 32, 64])
  expected = [np.mean([p["i2t"]["map"] for p in r["per_seed"]]) for r in GRID if r["method"] == "dcph"]
  np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
  np.testing.assert_allclose(line.get_ydata(), [r["map"]["i2t"] for r in GRID if r["method"] == "dcph"], rtol=1e-9)
  (chance,) = [l for l in i2t.get_lines() if l.get_label() == "chance"]
  assert chance.get_ydata()[0] == pytest.approx(metrics.chance_map(QUERY, DB), rel=1e-9)


def test_labels_name_only_the_settings_that_differ():
  runs = [fake_run(seed=0, lr=0.01, clip_norm=1.0), fake_run(seed=0, lr=0.03, clip_norm=1.0),
          fake_run(seed=1, lr=0.03, clip_norm=1.0), fake_run(method="dcph", seed=0, lr=0.01)]
  series = plots.group_series(runs)
  assert [s.label for s in series] == ["dcmh lr=0.01", "dcmh lr=0.03 (2 seeds)", "dcph"]
  assert [s.num_seeds for s in series] == [1, 2, 1]
  one_method = plots.group_series(runs[:3])
  assert [s.label for s in one_method] == ["lr=0.01", "lr=0.03 (2 seeds)"]
  # reruns of the same seed are not seeds: they stay apart, named by run
  reruns = plots.group_series([fake_run(seed=0), dict(fake_run(seed=0), run_name="again")])
  assert len(reruns) == 2 and len({s.label for s in reruns}) == 2


def test_long_labels_become_numbers_explained_in_the_legend(tmp_path):
  runs = [fake_run(lr=lr, image_hidden=[h, h], init=init) for lr, h, init in
          ((0.01, 512, "kaiming_uniform"), (0.03, 1024, "xavier_normal"))]
  series = plots.group_series(runs)
  assert [s.label for s in series] == ["(1)", "(2)"]
  assert series[0].full_label == "image_hidden=512,512, init=kaiming_uniform, lr=0.01"
  fig = plots.curves_figure(runs)
  fig.savefig(tmp_path / "long.png")
  _check_layout(fig, tmp_path / "long.png")
  title = fig.legends[0].get_title().get_text()
  assert "(1) image_hidden=512,512, init=kaiming_uniform, lr=0.01" in title and "(2) image_hidden=1024" in title


def test_chance_from_a_results_file_equals_chance_map():
  rng = np.random.default_rng(3)
  query = (rng.random((40, 5)) < 0.15).astype(np.float32)  # some queries share no label
  db = (rng.random((200, 5)) < 0.15).astype(np.float32)
  codes = np.where(rng.random((240, 8)) < 0.5, 1, -1).astype(np.int8)
  m = json.loads(json.dumps(metrics.evaluate(codes[:40], codes[40:], query, db)))
  assert m["num_no_relevant"] > 0
  level = plots.chance({"metrics": {"i2t": m}}, "i2t")
  assert level["map"] == pytest.approx(metrics.chance_map(query, db), rel=1e-12)
  relevant = (query @ db.T > 0).mean(axis=1)
  assert level["precision"] == pytest.approx(relevant.mean(), rel=1e-12)
  old = {"metrics": {"i2t": {"pr_radius": {"radius": [0, 1], "precision": [0.0, 0.2], "recall": [0.0, 1.0]}}}}
  assert plots.chance(old, "i2t") == {"precision": 0.2}


def test_old_ratio_files_draw_no_undefined_points():
  precision, recall = plots.pr_by_radius({"radius": [0, 1, 2], "precision": [0.0, 0.5, 0.4], "recall": [0.0, 0.5, 1.0]})
  np.testing.assert_array_equal(np.isnan(precision), [True, False, False])
  precision, recall = plots.pr_by_radius({"radius": [0, 1, 2], "retrieved": [0.0, 2.0, 4.0],
                                          "retrieved_relevant": [0.0, 1.0, 2.0]})
  np.testing.assert_allclose(precision[1:], [0.5, 0.5])
  np.testing.assert_allclose(recall, [0.0, 0.5, 1.0])


def test_without_matplotlib_one_line_names_the_extra(monkeypatch, tmp_path):
  for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
    monkeypatch.delitem(sys.modules, name)
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
  with pytest.raises(UserError) as e:
    plots.write(FIVE_SEEDS, tmp_path)
  assert str(e.value) == 'plots need matplotlib, which is not installed: pip install "jxhash[plot]"'
  assert list(tmp_path.iterdir()) == []
