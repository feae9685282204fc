"""The tables of docs/multiprocess.md: one process vs several with the same devices, on localhost.

    python experiments/multiprocess_table.py equality --work /tmp/mp-eq     # codes and mAP per layout
    python experiments/multiprocess_table.py timing --work /tmp/mp-time     # epoch time per layout

A layout PxD is P processes with D simulated CPU devices each (1xD runs experiments/run.py
directly, P>1 goes through experiments/launch_local.py). `equality` trains each case of
`CASES` (small synthetic data, 2 epochs, batch 32, 16 bits) in every layout and compares the
final codes (the latest checkpoint encoding the query set) and the test mAP with layout 1x4.
`timing` trains DCMH on the default synthetic data (1000 training items, the default config)
for two epoch counts in every layout and reports the time per epoch as the difference of the
training times over the difference of epochs (compilation, start-up and the final evaluation
cancel out), the best of --repeats. Both print a markdown table; the runs' results files
stay in --work.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = dict(num_items=300, num_query=40, num_train=96, num_val=24)
COMMON = ["--bits", "16", "--batch-size", "32", "--no-progress"]
# each case: run.py arguments (method, smoke-sized networks) and the synthetic data it trains on
CASES = {
    "dcmh": ["--method", "dcmh", "--set", "image_hidden=32", "--set", "text_hidden=32"],
    "mmach": ["--method", "mmach", "--set", "image_hidden=32", "--set", "text_hidden=32", "--set", "label_hidden=16",
              "--set", "attention_heads=2", "--set", "triplet_samples=8", "--set", "eps=0.01"],
    "uchm": ["--method", "uchm", "--set", "mie_epochs=2", "--set", "mie_batch_size=32", "--set", "image_hidden=32",
             "--set", "text_hidden=32", "--set", "mie_hidden=32", "--set", "mie_tokens=2", "--set", "mie_heads=2",
             "--set", "mie_rank=16"],
    # DCMH with a tiny CNN-F on synthetic 224x224 pixels, streamed from the host
    "pixels": ["--method", "dcmh", "--set", "cnn_channels=6,8,8,8,8", "--set", "cnn_fc_width=16",
               "--set", "text_hidden=32"],
}
CASE_DATA = {name: SMALL for name in CASES} | {"pixels": dict(SMALL, num_items=160, image_size=224, num_labels=4)}


def case_args(name: str) -> list[str]:
  """run.py arguments of a case, its data options included."""
  options = [arg for k, v in CASE_DATA[name].items() for arg in ("--data-option", f"{k}={v}")]
  return [*COMMON, *CASES[name], *options]


def run_layout(processes: int, devices: int, args: list[str], log=None) -> subprocess.CompletedProcess:
  """run.py with `devices` simulated CPU devices per process, as one process or through the launcher."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_"))}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  if processes == 1:
    cmd = [sys.executable, str(ROOT / "experiments" / "run.py"), *args]
  else:
    cmd = [sys.executable, str(ROOT / "experiments" / "launch_local.py"), "-n", str(processes), "--cpu-devices",
           str(devices), "--", *args]
  proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
  if log is not None:
    log.write_text(proc.stdout + proc.stderr)
  if proc.returncode != 0:
    raise SystemExit(f"error: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return proc


def _layouts(text: str) -> list[tuple[int, int]]:
  out = []
  for item in text.split(","):
    p, _, d = item.partition("x")
    out.append((int(p), int(d)))
  return out


def equality(work: pathlib.Path, names: list[str], layouts: list[tuple[int, int]]) -> str:
  import numpy as np
  from jxhash import checkpoint, data
  rows = ["| case | layout | mAP i2t | mAP t2i | max abs mAP diff vs 1x4 | code bits differing vs 1x4 |",
          "|---|---|---|---|---|---|"]
  for name in names:
    ds = data.load("synthetic", **CASE_DATA[name])
    found = {}
    for p, d in layouts:
      tag = f"{name}-{p}x{d}"
      out, ck = work / f"{tag}.json", work / tag
      run_layout(p, d, [*case_args(name), "--epochs", "2", "--eval-every", "0", "--out", str(out),
                        "--checkpoint-dir", str(ck), "--overwrite"], log=work / f"{tag}.log")
      res = json.loads(out.read_text())
      enc = checkpoint.restore(ck / res["run_name"], which="latest")
      codes = np.concatenate([enc.encode("image", ds.image[ds.query]), enc.encode("text", ds.text[ds.query])])
      found[p, d] = (res["map"], codes)
    base_map, base_codes = found.get((1, 4), next(iter(found.values())))
    for (p, d), (maps, codes) in found.items():
      diff = max(abs(maps[k] - base_map[k]) for k in ("i2t", "t2i"))
      bits = int((codes != base_codes).sum())
      rows.append(f"| {name} | {p}x{d} | {maps['i2t']:.6f} | {maps['t2i']:.6f} | {diff:.1e} | "
                  f"{bits} of {codes.size} |")
  return "\n".join(rows)


def timing(work: pathlib.Path, layouts: list[tuple[int, int]], epochs: tuple[int, int], repeats: int) -> str:
  base = ["--method", "dcmh", "--bits", "32", "--no-progress", "--no-checkpoint", "--eval-every", "0"]
  rows = [f"| layout | train time, {epochs[0]} epochs (s) | train time, {epochs[1]} epochs (s) | "
          "time per epoch (s) | wall time of the longer run (s) |", "|---|---|---|---|---|"]
  for p, d in layouts:
    best = None
    for r in range(repeats):
      times, wall = {}, None
      for e in epochs:
        out = work / f"time-{p}x{d}-{e}-{r}.json"
        start = time.perf_counter()
        run_layout(p, d, [*base, "--epochs", str(e), "--out", str(out), "--overwrite"])
        wall = time.perf_counter() - start
        times[e] = json.loads(out.read_text())["train_time_s"]
      per_epoch = (times[epochs[1]] - times[epochs[0]]) / (epochs[1] - epochs[0])
      if best is None or per_epoch < best[0]:
        best = (per_epoch, times, wall)
    per_epoch, times, wall = best
    rows.append(f"| {p}x{d} | {times[epochs[0]]:.1f} | {times[epochs[1]]:.1f} | {per_epoch:.2f} | {wall:.1f} |")
  return "\n".join(rows)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("table", choices=("equality", "timing"))
  p.add_argument("--work", required=True, help="folder for the runs' results files, checkpoints and logs")
  p.add_argument("--cases", default=",".join(CASES), help="equality: cases to run (default: all)")
  p.add_argument("--layouts", default=None, help="PxD,...: processes x devices each (default: equality "
                                                 "1x4,2x2,4x1; timing 1x2,2x1,1x4,2x2)")
  p.add_argument("--epochs", default="2,12", help="timing: the two epoch counts (default 2,12)")
  p.add_argument("--repeats", type=int, default=1, help="timing: repeats, the best kept (default 1)")
  args = p.parse_args(argv)
  work = pathlib.Path(args.work).resolve()
  work.mkdir(parents=True, exist_ok=True)
  if args.table == "equality":
    print(equality(work, args.cases.split(","), _layouts(args.layouts or "1x4,2x2,4x1")))
  else:
    short, long = (int(e) for e in args.epochs.split(","))
    print(timing(work, _layouts(args.layouts or "1x2,2x1,1x4,2x2"), (short, long), args.repeats))
  return 0


if __name__ == "__main__":
  sys.exit(main())
