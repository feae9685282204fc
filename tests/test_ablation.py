"""jxhash.commands.ablation: the val-choice table (against hand-computed values) and its command line."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from jxhash.commands import ablation

ROOT = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = {"a": {}, "b": {"lr": 0.5}}


def variant_of(config: dict) -> str:
  return "b" if config.get("lr") == 0.5 else "a"


def main(argv) -> int:
  return ablation.main(argv, doc="test study", method="dcmh", variants=VARIANTS, variant_of=variant_of)


def val_record(variant: str, i2t: list[float], t2i: list[float]) -> dict:
  return {"kind": "val", "method": "dcmh", "variant": variant, "dataset": "wikipedia",
          "config": {"bits": 32}, "val": {"i2t": i2t, "t2i": t2i}}


def write(path: pathlib.Path, record: dict) -> str:
  path.write_text(json.dumps(record))
  return str(path)


def cells(row: str) -> list[float]:
  """value, std, value, std, ... of a table row's "x ± s" cells."""
  out = []
  for cell in row.strip("|").split("|")[1:]:
    value, std = cell.split("±")
    out += [float(value), float(std)]
  return out


def test_table_of_two_val_records_against_hand_computed_values(tmp_path):
  # a: i2t (.5, .7), t2i (.3, .5), per-seed means (.4, .6)
  # b: i2t (.6, .9), t2i (.2, .6), per-seed means (.4, .75)
  # population std over the 2 seeds = |x1 - x2| / 2; paired differences b - a:
  # i2t (.1, .2), t2i (-.1, .1), mean (0, .15)
  files = [write(tmp_path / "val-a.json", val_record("a", [0.5, 0.7], [0.3, 0.5])),
           write(tmp_path / "val-b.json", val_record("b", [0.6, 0.9], [0.2, 0.6]))]
  lines = ablation.table(files, variant_of=variant_of).splitlines()
  assert lines[0].startswith("val mAP@all, dcmh, wikipedia, 32 bits, 2 seeds") and "difference to a" in lines[0]
  rows = {line.split("|")[1].strip(): cells(line) for line in lines[4:]}
  assert list(rows) == ["a", "b"]
  want = {"a": [(0.6, 0.1), (0.4, 0.1), (0.5, 0.1), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)],
          "b": [(0.75, 0.15), (0.4, 0.2), (0.575, 0.175), (0.15, 0.05), (0.0, 0.1), (0.075, 0.075)]}
  for name, row in rows.items():
    assert row == pytest.approx([x for pair in want[name] for x in pair], abs=1e-4), name


def test_table_names_test_files_by_their_config_and_skips_unpaired_differences(tmp_path):
  def results(lr, maps):
    return {"method": "dcmh", "dataset": "wikipedia", "config": {"bits": 16, "lr": lr},
            "per_seed": [{"i2t": {"map": m}, "t2i": {"map": m}} for m in maps]}

  files = [write(tmp_path / "a.json", results(0.1, [0.2, 0.4])), write(tmp_path / "b.json", results(0.5, [0.3]))]
  lines = ablation.table(files, variant_of=variant_of).splitlines()
  assert lines[0].startswith("test mAP@all, dcmh, wikipedia, 16 bits, 1/2 seeds")
  assert lines[5].startswith("| b | 0.3000 ± 0.0000 |") and lines[5].endswith("| — | — | — |")


def test_mixed_val_and_test_files_are_one_line_errors(tmp_path, capsys):
  val = write(tmp_path / "val.json", val_record("a", [0.5], [0.5]))
  test = write(tmp_path / "test.json", {"method": "dcmh", "config": {"bits": 32}, "per_seed": []})
  assert main(["table", val, test]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: table:") and "test.json" in err


@pytest.mark.parametrize("argv, words", [
    (["val", "--variant", "c", "--out", "x.json"], ["--variant", "'c'"]),
    (["val", "--variant", "a", "--seeds", "0", "--out", "x.json"], ["--seeds", ">= 1"]),
    (["table"], ["files"]),
])
def test_bad_flags_are_one_line_with_exit_code_2(argv, words, capsys):
  assert main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: ")
  assert all(w in err for w in words), err


def test_existing_out_is_refused_before_any_training(tmp_path, capsys):
  out = tmp_path / "val-a.json"
  out.write_text("keep")
  assert main(["val", "--variant", "a", "--data-dir", str(tmp_path / "none"), "--out", str(out)]) == 2
  assert "--overwrite" in capsys.readouterr().err and out.read_text() == "keep"


def test_unreadable_table_file_names_it(tmp_path, capsys):
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  assert main(["table", str(bad)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and str(bad) in err


@pytest.mark.slow
def test_study_scripts_run_as_programs(tmp_path):
  # the scripts import jxhash only, not each other: their table runs from any directory
  files = [write(tmp_path / "val-none.json", val_record("none", [0.5, 0.7], [0.3, 0.5])),
           write(tmp_path / "val-codes.json", val_record("codes", [0.6, 0.9], [0.2, 0.6]))]
  for script in ("mmach_triplet", "hsidhn_lab_template", "uchm_correction"):
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / f"{script}.py"), "table", *files],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| codes | 0.7500 ± 0.1500 | 0.4000 ± 0.2000 | 0.5750 ± 0.1750 | +0.1500 ± 0.0500 |" in done.stdout
