"""jxhash report (experiments/report.py): one-line errors (exit 2) before anything is written, atomic README and
plot writes, run labels that tell runs apart, and PR curves without undefined points."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

from jxhash.commands import report  # noqa: E402

README = "# Title\r\nintro\n<!-- results:main:start -->\nold table\n<!-- results:main:end -->\ntail\n"


def result(**fields) -> dict:
  """A small but complete results dict; `fields` override or (with None) remove keys."""
  r = {"method": "dcmh", "dataset": "synthetic", "bits": 16, "map": {"i2t": 0.5, "t2i": 0.25},
       "num_seeds": 1, "seed": 0, "config": {"bits": 16, "lr": 0.01}, "selected": "last",
       "split": {"rule": "random", "seed": 0}, "train_time_s": 1.5,
       "metrics": {d: {"p@n": {"n": [1, 10], "precision": [0.5, 0.4]},
                       "pr_radius": {"radius": [0, 1, 2], "retrieved": [0.0, 2.0, 4.0],
                                     "retrieved_relevant": [0.0, 1.0, 2.0]}} for d in ("i2t", "t2i")}}
  for key, value in fields.items():
    if value is None:
      r.pop(key, None)
    else:
      r[key] = value
  return r


def write(path: pathlib.Path, content) -> pathlib.Path:
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
  return path


def run_report(capsys, *argv) -> tuple[int, str, str]:
  code = report.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def litter(folder: pathlib.Path) -> list:
  return [p for p in folder.rglob("*") if "tmp" in p.name or p.name.startswith(".jxhash")]


# --------------------------------------------------------------------- bad results files

def _nested(depth):
  return "[" * depth + "]" * depth


BAD_RESULTS = [
    ("3", "holds a JSON number, not a results object"),
    ("[1, 2]", "holds a JSON list, not a results object"),
    ('"dcmh"', "holds a JSON string, not a results object"),
    ("null", "holds a JSON null"),
    ('{"method": "dcmh",', "is not valid JSON"),
    (b"\xff\xfe{}", "is not UTF-8 text"),
    (_nested(200_000), "nests JSON too deeply"),
    (result(method=None), "field 'method' is missing"),
    (result(method=7), "field 'method' must be a non-empty string, got number 7"),
    (result(dataset=""), "field 'dataset' must be a non-empty string"),
    (result(bits="16"), "field 'bits' must be an integer >= 1, got string \"16\""),
    (result(bits=True), "field 'bits' must be an integer >= 1, got true/false"),
    (result(bits=16.5), "field 'bits' must be an integer >= 1, got number 16.5"),
    (result(bits=None), "field 'bits' is missing"),
    (result(map=[0.5, 0.25]), "field 'map' must be an object, got list"),
    (result(map={"i2t": 0.5}), "field 'map.t2i' is missing"),
    (result(map={"i2t": "0.5", "t2i": 0.2}), "field 'map.i2t' must be a finite number, got string"),
    ('{"method": "dcmh", "dataset": "s", "bits": 16, "map": {"i2t": NaN, "t2i": 0.1}}',
     "field 'map.i2t' must be a finite number, got NaN"),
    ('{"method": "dcmh", "dataset": "s", "bits": 16, "map": {"i2t": 0.1, "t2i": Infinity}}',
     "field 'map.t2i' must be a finite number, got Infinity"),
    (result(map_std={"i2t": "0.01"}), "field 'map_std.i2t' must be a finite number"),
    (result(map_std={"i2t": -0.1}), "field 'map_std.i2t' must be >= 0"),
    (result(num_seeds=0), "field 'num_seeds' must be an integer >= 1, got number 0"),
    (result(num_seeds="3"), "field 'num_seeds' must be an integer >= 1, got string"),
    (result(seed="0"), "field 'seed' must be an integer, got string"),
    (result(train_time_s="fast"), "field 'train_time_s' must be a finite number"),
    (result(config=["lr=0.1"]), "field 'config' must be an object, got list"),
    (result(run_name=3), "field 'run_name' must be a string"),
    (result(metrics={"i2t": {"p@n": {"n": [1, 10], "precision": [0.5]}}}),
     "field 'metrics.i2t.p@n' lists differ in length: n 2, precision 1"),
    (result(metrics={"t2i": {"pr_radius": {"radius": [0, 1], "precision": [0.1, float("nan")],
                                           "recall": [0.1, 1.0]}}}),
     "field 'metrics.t2i.pr_radius.precision[1]' must be a finite number, got NaN"),
    (result(metrics={"t2i": {"pr_radius": {"radius": [0, 1], "retrieved": [1, 2]}}}),
     "field 'metrics.t2i.pr_radius.retrieved_relevant' must be a list of numbers, got null"),
    (result(metrics=[1]), "field 'metrics' must be an object"),
    # values no evaluation gives: the table and the plots would show them as results
    (result(map={"i2t": 7.5, "t2i": 0.2}), "field 'map.i2t' must be between 0 and 1 (it is an mAP), got 7.5"),
    (result(map={"i2t": 0.5, "t2i": -3}), "field 'map.t2i' must be between 0 and 1 (it is an mAP), got -3"),
    (result(metrics={"i2t": {"map": 1.5}}), "field 'metrics.i2t.map' must be between 0 and 1"),
    (result(metrics={"i2t": {"p@n": {"n": [1, 10], "precision": [0.5, 1.25]}}}),
     "field 'metrics.i2t.p@n.precision[1]' must be between 0 and 1 (it is a precision), got 1.25"),
    (result(metrics={"t2i": {"pr_radius": {"radius": [0, 1], "precision": [0.1, 2.0], "recall": [0.1, 1.0]}}}),
     "field 'metrics.t2i.pr_radius.precision[1]' must be between 0 and 1"),
    (result(metrics={"t2i": {"pr_radius": {"radius": [0, 1], "retrieved": [1.0, 2.0],
                                           "retrieved_relevant": [1.0, 3.0]}}}),
     "field 'metrics.t2i.pr_radius.retrieved_relevant[1]' must be between 0 and retrieved[1] = 2.0"),
    (result(per_seed=[{"seed": 0, "i2t": {"map": 7.5}}]), "field 'per_seed[0].i2t.map' must be between 0 and 1"),
    (result(per_seed={"i2t": 0.5}), "field 'per_seed' must be a list, got object"),
    (result(history=[{"epoch": 1, "stage": "train", "image/loss": "low"}]),
     "field 'history[0].image/loss' must be a finite number, got string"),
    (result(history=[{"stage": "train"}]), "field 'history[0].epoch' is missing"),
    (result(history=[{"epoch": 1, "per_seed": {"val_map": [0.5, None]}}]),
     "field 'history[0].per_seed.val_map[1]' must be a finite number, got null"),
    ('{"method": "dcmh", "dataset": "s", "bits": 16, "map": {"i2t": 0.1, "t2i": 0.1}, '
     '"metrics": {"i2t": {"map": NaN}}}', "field 'metrics.i2t.map' must be a finite number, got NaN"),
    # dataset names become README sections and table cells
    (result(dataset="wiki<!-- results:main:end -->"), "field 'dataset' must be a plain name (no '|', '<!--'"),
    (result(dataset="wiki|pedia"), "field 'dataset' must be a plain name"),
    (result(dataset="wiki\npedia"), "field 'dataset' must be a plain name"),
    (result(dataset="wiki-->"), "field 'dataset' must be a plain name"),
]


@pytest.mark.parametrize("content,message", BAD_RESULTS, ids=[m for _, m in BAD_RESULTS])
def test_bad_results_file_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, content, message):
  good = write(tmp_path / "good.json", result())
  bad = write(tmp_path / "bad.json", content)
  readme = write(tmp_path / "README.md", README)
  code, out, err = run_report(capsys, good, bad, "--readme", readme, "--plots", tmp_path / "plots")
  assert code == 2 and out == ""
  assert err.count("\n") == 1 and err.startswith("error: ")
  assert message in err and str(bad) in err
  assert readme.read_bytes() == README.encode()
  assert not (tmp_path / "plots").exists() and litter(tmp_path) == []


def test_missing_and_directory_results_files(tmp_path, capsys):
  code, _, err = run_report(capsys, tmp_path / "nope.json")
  assert code == 2 and f"results file {tmp_path / 'nope.json'} does not exist" in err
  code, _, err = run_report(capsys, tmp_path)
  assert code == 2 and "is not a regular file" in err


def test_huge_results_file(tmp_path, capsys):
  huge = tmp_path / "huge.json"
  with open(huge, "wb") as f:  # sparse: no real disk use
    f.truncate(report.MAX_RESULTS_BYTES + 1)
  code, _, err = run_report(capsys, huge)
  assert code == 2 and err.count("\n") == 1
  assert f"results file {huge} is 64.0 MiB, more than the 64 MiB" in err


# ------------------------------------------------------------------------ README problems

@pytest.mark.parametrize("content,message", [
    ("# no markers\n", "has no <!-- results:main:start --> marker"),
    ("<!-- results:main:start -->\n", "has no <!-- results:main:end --> marker"),
    ("<!-- results:main:start -->\n<!-- results:main:start -->\n<!-- results:main:end -->\n",
     "has <!-- results:main:start --> 2 times; it must occur exactly once"),
    ("<!-- results:main:start -->\n<!-- results:main:end -->\n<!-- results:main:end -->\n",
     "has <!-- results:main:end --> 2 times"),
    ("<!-- results:main:end -->\nx\n<!-- results:main:start -->\n",
     "has <!-- results:main:end --> before <!-- results:main:start -->"),
    ("<!-- results:main:start -->\n<!-- results:other:start -->\n<!-- results:main:end -->\n",
     "has <!-- results:other:start --> inside the 'main' section"),
])
def test_misplaced_markers(tmp_path, capsys, content, message):
  readme = write(tmp_path / "README.md", content)
  code, out, err = run_report(capsys, write(tmp_path / "r.json", result()), "--readme", readme,
                              "--plots", tmp_path / "plots")
  assert code == 2 and out == "" and err.count("\n") == 1
  assert f"--readme {readme} {message}" in err
  assert readme.read_bytes() == content.encode() and not (tmp_path / "plots").exists() and litter(tmp_path) == []


def test_readme_missing_directory_not_utf8_and_bad_section(tmp_path, capsys):
  good = write(tmp_path / "r.json", result())
  code, _, err = run_report(capsys, good, "--readme", tmp_path / "NOPE.md")
  assert code == 2 and f"--readme {tmp_path / 'NOPE.md'} does not exist" in err
  code, _, err = run_report(capsys, good, "--readme", tmp_path)
  assert code == 2 and f"--readme {tmp_path} is not a regular file" in err
  latin = write(tmp_path / "latin.md", b"caf\xe9 <!-- results:main:start --><!-- results:main:end -->")
  code, _, err = run_report(capsys, good, "--readme", latin)
  assert code == 2 and "is not UTF-8 text" in err
  code, _, err = run_report(capsys, good, "--readme", write(tmp_path / "R.md", README), "--section", "a -->")
  assert code == 2 and "--section must be" in err and err.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files and folders anyway")
def test_readonly_readme_and_folder(tmp_path, capsys):
  good = write(tmp_path / "r.json", result())
  readme = write(tmp_path / "README.md", README)
  readme.chmod(0o444)
  code, _, err = run_report(capsys, good, "--readme", readme)
  assert code == 2 and f"--readme {readme} is read-only" in err
  locked = tmp_path / "locked"
  locked.mkdir()
  write(locked / "README.md", README)
  locked.chmod(0o555)
  try:
    code, _, err = run_report(capsys, good, "--readme", locked / "README.md")
    assert code == 2 and "is not writable" in err
  finally:
    locked.chmod(0o755)


# ------------------------------------------------------------------------- --plots problems

def test_plots_naming_a_file_or_unwritable(tmp_path, capsys):
  good = write(tmp_path / "r.json", result())
  readme = write(tmp_path / "README.md", README)
  target = write(tmp_path / "plots.png", "not a folder")
  code, out, err = run_report(capsys, good, "--plots", target, "--readme", readme)
  assert code == 2 and out == "" and err.count("\n") == 1
  assert f"--plots folder {target} is a file, not a directory" in err
  code, _, err = run_report(capsys, good, "--plots", target / "sub")
  assert code == 2 and f"which is a file, not a directory" in err
  # /proc refuses new files even for root
  code, _, err = run_report(capsys, good, "--plots", "/proc/jxhash-report-test", "--readme", readme)
  assert code == 2 and "--plots folder /proc/jxhash-report-test is not writable" in err
  assert target.read_text() == "not a folder" and readme.read_bytes() == README.encode() and litter(tmp_path) == []


def test_dataset_names_cannot_escape_the_plot_folder(tmp_path, capsys):
  rows = [write(tmp_path / "a.json", result(dataset="../../evil")), write(tmp_path / "b.json", result(dataset="x/y"))]
  code, out, _ = run_report(capsys, *rows, "--plots", tmp_path / "plots")
  assert code == 0
  written = sorted(p.name for p in (tmp_path / "plots").iterdir())
  assert written == ["_.._evil-16bits.png", "x_y-16bits.png"]
  assert not (tmp_path.parent / "evil-16bits.png").exists()
  clash = [write(tmp_path / "c.json", result(dataset="x?y"))]
  code, _, err = run_report(capsys, rows[1], *clash, "--plots", tmp_path / "p2")
  assert code == 2 and "would both be plotted to" in err and not (tmp_path / "p2").exists()


# ------------------------------------------------------------------------- successful runs

def test_readme_section_replaced_rest_byte_identical(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path))
  (tmp_path / "docs").mkdir()
  real = write(tmp_path / "docs" / "README.md", README)
  (tmp_path / "link.md").symlink_to(real)
  write(tmp_path / "r.json", result())
  code, out, err = run_report(capsys, "r.json", "--readme", "~/link.md")  # relative, ~ and a symlink
  assert code == 0 and err == ""
  text = real.read_bytes().decode()
  head, rest = text.split("<!-- results:main:start -->\n")
  table, tail = rest.split("\n<!-- results:main:end -->")
  assert head == "# Title\r\nintro\n" and tail == "\ntail\n"
  assert table == report.table(report.load_results([tmp_path / "r.json"]))
  assert table in out and f"section of {real}" in out
  assert (tmp_path / "link.md").is_symlink() and litter(tmp_path) == []
  # a second run finds its own markers again and changes nothing
  assert run_report(capsys, "r.json", "--readme", "link.md")[0] == 0
  assert real.read_bytes().decode() == text


def test_full_disk_keeps_the_old_readme_and_leaves_no_temporary(tmp_path, capsys, monkeypatch):
  readme = write(tmp_path / "README.md", README)
  good = write(tmp_path / "r.json", result())

  def full(fd):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "fsync", full)
  code, _, err = run_report(capsys, good, "--readme", readme)
  assert code == 2 and err.count("\n") == 1
  assert f"cannot write --readme {readme}: No space left on device" in err
  assert readme.read_bytes() == README.encode() and litter(tmp_path) == []
  code, _, err = run_report(capsys, good, "--plots", tmp_path / "plots")
  assert code == 2 and "cannot write plot" in err
  assert litter(tmp_path) == [] and list((tmp_path / "plots").iterdir()) == []


def test_plots_are_png_and_never_draw_undefined_pr_points(tmp_path, capsys, monkeypatch):
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib.axes import Axes
  drawn = []
  original = Axes.plot

  def record(self, *args, **kwargs):  # titles are set after the lines: keep the axes
    drawn.append((self, kwargs.get("label"), np.asarray(args[0], float), np.asarray(args[1], float)))
    return original(self, *args, **kwargs)

  monkeypatch.setattr(Axes, "plot", record)
  # an old file: precision 0 as a placeholder where radius 0 retrieved nothing
  old = result(method="dcph", metrics={"i2t": {"pr_radius": {"radius": [0, 1, 2], "precision": [0.0, 0.5, 0.4],
                                                             "recall": [0.0, 0.5, 1.0]}}})
  new = result()  # counts: radius 0 retrieves nothing
  paths = [write(tmp_path / "old.json", old), write(tmp_path / "new.json", new)]
  code, out, _ = run_report(capsys, *paths, "--plots", tmp_path / "plots")
  assert code == 0
  png = tmp_path / "plots" / "synthetic-16bits.png"
  assert f"wrote {png}" in out and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  pr = {(ax.get_title(), label): (x, y) for ax, label, x, y in drawn if "PR" in ax.get_title()}
  assert set(pr) == {("i2t PR (Hamming radius)", "dcph"), ("i2t PR (Hamming radius)", "dcmh"),
                     ("t2i PR (Hamming radius)", "dcmh")}
  for x, y in pr.values():
    assert not ((x == 0) & (y == 0)).any() and np.isfinite(x).all() and np.isfinite(y).all()
  np.testing.assert_allclose(pr["i2t PR (Hamming radius)", "dcph"], ([0.5, 1.0], [0.5, 0.4]))
  np.testing.assert_allclose(pr["i2t PR (Hamming radius)", "dcmh"], ([0.5, 1.0], [0.5, 0.5]))


# ---------------------------------------------------------------------------------- labels

def _rows(tmp_path, *results):
  return report.load_results([write(tmp_path / f"r{i}.json", r) for i, r in enumerate(results)])


def _labels(rows):
  labels = report.labelled(rows)
  return [labels[id(r)] for r in rows]


def test_one_and_three_seed_runs_are_told_apart(tmp_path):
  rows = _rows(tmp_path, result(), result(num_seeds=3, map_std={"i2t": 0.01, "t2i": 0.02}),
               result(method="dcph", config={"bits": 16}))
  assert _labels(rows) == ["dcmh (seed 0)", "dcmh (3 seeds from 0)", "dcph"]
  lines = report.table(rows).splitlines()
  assert lines[2].startswith("| synthetic | dcmh (seed 0) | 16 | 0.5000 | 0.2500 | 1 | last |")
  assert lines[3].startswith("| synthetic | dcmh (3 seeds from 0) | 16 | 0.5000 ± 0.0100 | 0.2500 ± 0.0200 | 3 |")
  assert lines[4].startswith("| synthetic | dcph | 16 |")


def test_labels_name_only_what_differs(tmp_path):
  rows = _rows(tmp_path, result(seed=1), result(seed=0, config={"bits": 16, "lr": 0.03}),
               result(seed=0, split={"rule": "dcmh", "seed": 0}))
  assert _labels(rows) == ["dcmh (seed 0, lr=0.03, split rule=random)",
                           "dcmh (seed 0, lr=0.01, split rule=dcmh)",
                           "dcmh (seed 1, lr=0.01, split rule=random)"]
  # runs at other bits are other comparisons: each is just the method there
  rows = _rows(tmp_path, result(), result(bits=32, num_seeds=3))
  assert _labels(rows) == ["dcmh", "dcmh"]


def test_a_config_field_older_files_lack_does_not_label_runs(tmp_path):
  # a results file written before a Config field existed has no value for it: that is not a
  # setting that differs, so only epochs tells these runs apart
  rows = _rows(tmp_path, result(config={"bits": 16, "lr": 0.01, "epochs": 100}),
               result(config={"bits": 16, "lr": 0.01, "epochs": 300, "network": "mlp"}))
  assert _labels(rows) == ["dcmh (epochs=100)", "dcmh (epochs=300)"]
  # and runs that then look alike are still told apart, by run name
  rows = _rows(tmp_path, result(run_name="a", config={"bits": 16, "lr": 0.01}),
               result(run_name="b", config={"bits": 16, "lr": 0.01, "network": "mlp"}))
  assert _labels(rows) == ["dcmh [a]", "dcmh [b]"]


def test_reruns_get_their_run_name_or_file_name(tmp_path):
  rows = _rows(tmp_path, result(run_name="dcmh-a"), result(run_name="dcmh-b"))
  assert _labels(rows) == ["dcmh [dcmh-a]", "dcmh [dcmh-b]"]
  rows = _rows(tmp_path, result(), result(name="mine"))
  assert sorted(_labels(rows)) == ["dcmh [r0]", "dcmh [r1]"]


def test_table_cells_cannot_break_the_markdown_row(tmp_path):
  rows = _rows(tmp_path, result(method="a|b", settings="x\ny", train_time_s=None))
  row = report.table(rows).splitlines()[2]
  assert row == "| synthetic | a\\|b | 16 | 0.5000 | 0.2500 | 1 | last | x y |  |  |"


def test_table_says_where_each_row_ran(tmp_path):
  rows = _rows(tmp_path, result(environment={"backend": "cpu", "device": "cpu"}),
               result(method="dcph", train_time_s=7.5, environment={"backend": "gpu", "device": "NVIDIA H100"}))
  lines = report.table(rows).splitlines()
  assert lines[0].endswith("| train s | on |")
  assert lines[3].endswith("| 7.5 | NVIDIA H100 |") and lines[2].endswith("| cpu |")


def test_same_file_twice_is_one_row(tmp_path, monkeypatch):
  write(tmp_path / "r.json", result())
  monkeypatch.chdir(tmp_path)
  assert len(report.load_results(["r.json", tmp_path / "r.json"])) == 1


# ------------------------------------------------------------------------------ subprocess

@pytest.mark.slow
def test_command_line_exit_code_2(tmp_path):
  bad = write(tmp_path / "bad.json", "[]")
  proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "report.py"), str(bad)],
                        capture_output=True, text=True, cwd=tmp_path, timeout=300)
  assert proc.returncode == 2 and proc.stdout == ""
  assert proc.stderr == f"error: results file {bad} holds a JSON list, not a results object " \
                        "(one object with method, dataset, bits, map, ...)\n"


# ------------------------------------------------------------------------ --update-readme

TWO_SECTIONS = ("# Results\n<!-- results:synthetic:start -->\nold\n<!-- results:synthetic:end -->\nbetween\n"
                "<!-- results:other:start -->\n| dataset | method | bits |\n|---|---|---|\n| other | x | 8 |\n"
                "<!-- results:other:end -->\n")


def _section(text: str, name: str) -> str:
  return text.split(f"<!-- results:{name}:start -->\n")[1].split(f"\n<!-- results:{name}:end -->")[0]


def test_update_readme_replaces_each_datasets_section_only(tmp_path, capsys):
  readme = write(tmp_path / "README.md", TWO_SECTIONS)
  files = [write(tmp_path / "a.json", result()), write(tmp_path / "b.json", result(method="dcph", bits=32))]
  code, out, err = run_report(capsys, *files, "--update-readme", readme)
  assert code == 0 and err == "" and f"wrote the 'synthetic' section of {readme}" in out
  text = readme.read_text()
  assert _section(text, "synthetic") == report.table(report.load_results(files))
  assert text.split("<!-- results:synthetic:end -->")[1] == TWO_SECTIONS.split("<!-- results:synthetic:end -->")[1]
  # its own rows again (relabelled when a run joins them) are not dropped rows
  more = files + [write(tmp_path / "c.json", result(config={"bits": 16, "lr": 0.03}))]
  code, _, err = run_report(capsys, *more, "--update-readme", readme)
  assert code == 0, err
  assert "| dcmh (lr=0.01) | 16 |" in readme.read_text() and "| dcmh (lr=0.03) | 16 |" in readme.read_text()


def test_update_readme_refuses_to_drop_rows_it_did_not_produce(tmp_path, capsys):
  readme = write(tmp_path / "README.md", TWO_SECTIONS)
  files = [write(tmp_path / "a.json", result()), write(tmp_path / "b.json", result(method="dcph", bits=32)),
           write(tmp_path / "c.json", result(config={"bits": 16, "lr": 0.5}))]
  assert run_report(capsys, *files, "--update-readme", readme)[0] == 0
  before = readme.read_bytes()
  code, out, err = run_report(capsys, files[0], "--update-readme", readme, "--plots", tmp_path / "plots")
  assert code == 2 and out == "" and err.count("\n") == 1
  assert (f"error: --update-readme {readme}: the new 'synthetic' table would drop 2 row(s) that these results do "
          "not give: synthetic dcmh 16 bits (lr=0.5); synthetic dcph 32 bits (lr=0.01); pass their results files "
          "too, or --force to drop them") in err
  assert readme.read_bytes() == before and not (tmp_path / "plots").exists()
  code, out, _ = run_report(capsys, files[0], "--update-readme", readme, "--force")
  assert code == 0
  section = _section(readme.read_text(), "synthetic")
  assert section == report.table(report.load_results(files[:1])) and "dcph" not in section
  # --readme --section keeps the same guard
  one = write(tmp_path / "ONE.md", README)
  assert run_report(capsys, *files, "--readme", one)[0] == 0
  code, _, err = run_report(capsys, files[1], "--readme", one)
  assert code == 2 and "the new 'main' table would drop 2 row(s)" in err


def test_update_readme_needs_each_datasets_markers_and_a_section_name(tmp_path, capsys):
  readme = write(tmp_path / "README.md", TWO_SECTIONS)
  code, _, err = run_report(capsys, write(tmp_path / "a.json", result(dataset="wikipedia")), "--update-readme", readme)
  assert code == 2 and err.count("\n") == 1
  assert f"--update-readme {readme} has no <!-- results:wikipedia:start --> marker" in err
  code, _, err = run_report(capsys, write(tmp_path / "b.json", result(dataset="my data")), "--update-readme", readme)
  assert code == 2 and "dataset 'my data' cannot name a README section" in err
  code, _, err = run_report(capsys, tmp_path / "a.json", "--update-readme", readme, "--readme", readme)
  assert code == 2 and "give one" in err
  assert readme.read_text() == TWO_SECTIONS


def test_no_cell_can_write_a_readme_marker(tmp_path, capsys):
  readme = write(tmp_path / "README.md", README)
  evil = result(method="x<!-- results:main:end -->", settings="<!-- results:main:start -->")
  assert run_report(capsys, write(tmp_path / "a.json", evil), "--readme", readme)[0] == 0
  text = readme.read_text()
  assert text.count("<!--") == 2 and "x&lt;!-- results:main:end -->" in text
  # the README is still well formed: the same update runs again and changes nothing
  assert run_report(capsys, tmp_path / "a.json", "--readme", readme)[0] == 0 and readme.read_text() == text


def test_row_keys_read_the_table_back():
  rows = [result(method="a|b"), result(bits=32, settings="x\ny")]
  text = report.table([dict(r, _path=f"r{i}.json") for i, r in enumerate(rows)])
  assert report.row_keys(text) == [("synthetic", "a|b", "16", "defaults"), ("synthetic", "dcmh", "32", "x y")]
  assert report.row_keys("| a | b |\n|---|---|\n| 1 | 2 |\n") == []  # another table


# --------------------------------------------------------------------------------- figures

def test_plots_writes_every_figure(tmp_path, capsys):
  history = [{"epoch": e, "stage": "train", "image/loss": 1.0 / e} for e in (1, 2, 3)]
  files = [write(tmp_path / f"{b}.json", result(bits=b, history=history)) for b in (16, 32)]
  code, out, _ = run_report(capsys, *files, "--plots", tmp_path / "plots")
  assert code == 0
  names = sorted(p.name for p in (tmp_path / "plots").iterdir())
  assert names == ["synthetic-16bits-training.png", "synthetic-16bits.png", "synthetic-32bits-training.png",
                   "synthetic-32bits.png", "synthetic-map-vs-bits.png"]
  assert all(f"wrote {tmp_path / 'plots' / n}" in out for n in names)


def test_plots_without_matplotlib_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
  for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
    monkeypatch.delitem(sys.modules, name)
  monkeypatch.setitem(sys.modules, "matplotlib", None)
  code, out, err = run_report(capsys, write(tmp_path / "a.json", result()), "--plots", tmp_path / "plots")
  assert code == 2 and out == ""
  assert err == 'error: plots need matplotlib, which is not installed: pip install "jxhash[plot]"\n'
  assert not (tmp_path / "plots").exists()


def test_many_dropped_rows_are_counted():
  rows = "".join(f"| synthetic | dcmh | {b} | x | x | 1 | last | defaults | 1 | cpu |\n" for b in range(1, 8))
  content = ("<!-- results:s:start -->\n| dataset | method | bits | a | b | seeds | model | settings (--set) | t | on |\n"
             f"|---|---|---|---|---|---|---|---|---|---|\n{rows}<!-- results:s:end -->\n")
  from jxhash.errors import UserError
  with pytest.raises(UserError, match=r"would drop 7 row\(s\) .*: synthetic dcmh 1 bits \(defaults\); .*"
                                      r"synthetic dcmh 5 bits \(defaults\); and 2 more; pass"):
    report.new_readme(content, {"s": "new"}, where="R.md", force=False)
  assert report.new_readme(content, {"s": "new"}, where="R.md", force=True) == \
      "<!-- results:s:start -->\nnew\n<!-- results:s:end -->\n"
