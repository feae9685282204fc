"""Every code block of the README runs as written.

The blocks run in order, in a copy of the repository (so nothing here is touched) next to a
link to ../shared. Bash blocks run line by line (a trailing backslash continues a line); the
steps of a line that create a virtual environment or install packages are left out, since the
test already runs inside one, and every training command (experiments/run.py, sweep.py,
reproduce.py or `jxhash train|sweep|reproduce`) gets `--preset smoke` appended
(`with_smoke`), which shrinks each of its runs to its method's smoke configuration. Python
blocks run as scripts. A block preceded by `<!-- readme-test: skip (reason) -->` is skipped;
the reason must say why it cannot run here.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- readme-test: skip \(([^)]*)\) -->\n)?```(bash|python)\n(.*?)```", re.S)
INSTALL = re.compile(r"^(python3? -m venv|\. \.venv/bin/activate|pip install)")
# a training command and its arguments, up to a comment, `;`, `&&` or a pipe
TRAINING = re.compile(r"((?:python3? experiments/(?:run|sweep|reproduce)\.py|jxhash (?:train|sweep|reproduce))\b[^#;&|]*?)"
                      r"(\s*(?:[#;&|]|$))")


def blocks(text: str):
  """[(language, code, skip reason or None)] of the README's fenced bash/python blocks."""
  return [(m.group(3), m.group(4), m.group(2)) for m in BLOCK.finditer(text)]


def commands(code: str) -> list[str]:
  """A bash block's commands, continuation lines joined and install steps dropped."""
  lines, current = [], ""
  for raw in code.splitlines():
    current += raw.rstrip()
    if current.endswith("\\"):
      current = current[:-1] + " "
      continue
    if current.strip():
      steps = [s.strip() for s in current.split("&&")]
      kept = [s for s in steps if not INSTALL.match(s)]
      if kept:
        lines.append(" && ".join(kept))
    current = ""
  return lines


def with_smoke(line: str) -> str:
  """`line` with `--preset smoke` after the arguments of each training command in it (the last
  --preset given wins, and the smoke preset also wins over --epochs and --set)."""
  return TRAINING.sub(lambda m: f"{m.group(1)} --preset smoke{m.group(2)}", line)


def test_blocks_are_found_and_every_skip_says_why():
  found = blocks((ROOT / "README.md").read_text())
  assert len(found) >= 6
  assert all(reason.strip() for _, _, reason in found if reason is not None)
  assert commands("python3 -m venv .venv && . .venv/bin/activate && pip install -e . && python a.py \\\n  --x 1") \
      == ["python a.py    --x 1"]


def test_every_training_command_gets_the_smoke_preset():
  assert with_smoke("python experiments/run.py --method=dcmh   # synthetic") == \
      "python experiments/run.py --method=dcmh --preset smoke   # synthetic"
  assert with_smoke("python experiments/reproduce.py configs/wikipedia") == \
      "python experiments/reproduce.py configs/wikipedia --preset smoke"
  assert with_smoke('for c in a b; do jxhash train --config "$c" --bits 16; done') == \
      'for c in a b; do jxhash train --config "$c" --bits 16 --preset smoke; done'
  assert with_smoke("python experiments/report.py results/*.json") == "python experiments/report.py results/*.json"
  ran = [with_smoke(line) for language, code, skip in blocks((ROOT / "README.md").read_text())
         if skip is None and language == "bash" for line in commands(code)]
  training = [line for line in ran if TRAINING.search(line)]
  assert len(training) >= 8 and all("--preset smoke" in line for line in training)


def test_ci_runs_exactly_the_readme_test_command():
  (block,) = [code for _, code, skip in blocks((ROOT / "README.md").read_text()) if skip == "the test command itself"]
  ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set ",
                                                                                                          "cd ", "export "))]
  assert ci == [block.strip()]


@pytest.mark.slow
def test_every_readme_block_runs(tmp_path):
  copy = tmp_path / "main"
  ignore = shutil.ignore_patterns(".git", ".venv", "results", "checkpoints", "plots", "__pycache__", ".devdata",
                                  ".hypothesis", ".pytest_cache", "*.egg-info")
  shutil.copytree(ROOT, copy, ignore=ignore)
  (tmp_path / "shared").symlink_to((ROOT.parent / "shared").resolve())
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(copy))
  env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
  ran = 0
  for language, code, skip in blocks((copy / "README.md").read_text()):
    if skip is not None:
      continue
    if language == "python":
      steps = [[sys.executable, "-c", code]]
    else:
      steps = [["bash", "-c", "set -euo pipefail; " + with_smoke(line)] for line in commands(code)]
    for step in steps:
      proc = subprocess.run(step, cwd=copy, env=env, capture_output=True, text=True, timeout=1200)
      assert proc.returncode == 0, f"{step[-1][:300]}\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-3000:]}"
      ran += 1
  assert ran >= 10
