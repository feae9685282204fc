"""Speed and memory of `jxhash.metrics` against the per-query reference loop.

Usage (from the repository root):

  python benchmarks/bench_eval.py                       # all cases, 3 repeats
  python benchmarks/bench_eval.py --cases mirflickr --repeat 5
  python benchmarks/bench_eval.py --cases scaling --no-reference

Cases (64-bit random ±1 codes, seed 0):
  mirflickr  2000 queries × 18,015 items, the real MIRFlickr-25K labels (24 classes) from
             ../shared/data/mirflickr25k/mirflickr25k-lall.mat, first 2000 rows as queries.
  nuswide    2100 × 193,734 (the NUS-WIDE protocol sizes), synthetic labels (21 classes).
  million    1000 × 1,000,000, synthetic labels (24 classes): mAP@1000 and P@{100,500,1000};
             the reference runs on the first 20 queries only and its time is scaled by Q/20.
  scaling    1000 queries × 10k / 100k / 1M items, mAP@all, jxhash only.

Every measurement runs in its own subprocess so that its peak RSS (ru_maxrss: data, imports
and the evaluation together) is its own; "+RSS" is how far the timed calls raised that peak
above the data and imports, "traced" the peak of numpy allocations during one more call
(tracemalloc). jxhash is warmed up on a tiny problem first (numba loads or compiles its kernels
there); the timed calls exclude that. The time is the minimum over --repeat calls
(--reference-repeat for the reference; the machine is shared); the median is printed too. The
reference runs with one BLAS thread (see `run`).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SHARED = pathlib.Path(os.environ.get("JXHASH_SHARED_DATA", HERE.parent.parent / "shared" / "data"))
BITS = 64


# ---------------------------------------------------------------------------------- data

def synthetic_labels(rng, n, classes):
  """1-3 labels per item, classes drawn with Zipf-like frequencies (a few very common concepts,
  as in NUS-WIDE), so relevance rates vary widely between queries."""
  p = 1.0 / np.arange(1, classes + 1)
  p /= p.sum()
  labels = np.zeros((n, classes), np.uint8)
  for _ in range(3):
    pick = rng.choice(classes, size=n, p=p)
    keep = rng.random(n) < 0.6
    labels[np.flatnonzero(keep), pick[keep]] = 1
  labels[np.arange(n), rng.choice(classes, size=n, p=p)] = 1  # at least one label
  return labels


def random_codes(rng, n):
  """(n, 64) int8 ±1, generated without int64 temporaries so the process's peak RSS before the
  evaluation is the data itself."""
  codes = rng.integers(0, 2, size=(n, BITS), dtype=np.int8)
  codes *= 2
  codes -= 1
  return codes


def make_case(name):
  """(query_codes, db_codes, query_labels, db_labels, options) for a case name."""
  rng = np.random.default_rng(0)
  if name == "mirflickr":
    import scipy.io
    labels = scipy.io.loadmat(SHARED / "mirflickr25k" / "mirflickr25k-lall.mat")["LAll"]
    codes = random_codes(rng, labels.shape[0])
    return codes[:2000], codes[2000:], labels[:2000], labels[2000:], {}
  sizes = {"nuswide": (2100, 193_734, 21), "million": (1000, 1_000_000, 24),
           "scale-10k": (1000, 10_000, 24), "scale-100k": (1000, 100_000, 24),
           "scale-1m": (1000, 1_000_000, 24)}
  num_q, n_db, classes = sizes[name]
  qc, dc = random_codes(rng, num_q), random_codes(rng, n_db)
  ql, dl = synthetic_labels(rng, num_q, classes), synthetic_labels(rng, n_db, classes)
  options = {"top_k": 1000, "pn": (100, 500, 1000)} if name == "million" else {}
  return qc, dc, ql, dl, options


# -------------------------------------------------------------------------------- worker

def peak_rss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(case, impl, ties, backend, repeat):
  """One measurement; prints a JSON line."""
  qc, dc, ql, dl, options = make_case(case)
  top_k, pn = options.get("top_k"), options.get("pn", ())
  result = {"case": case, "impl": impl, "ties": ties, "backend": backend}
  if impl == "reference":
    sys.path.insert(0, str(HERE))
    import eval_reference
    num_q = qc.shape[0]
    if case == "million":
      qc, ql = qc[:20], ql[:20]
    if ties == "average":
      fn = lambda: {"map": eval_reference.reference_tie_average_map(qc, dc, ql, dl)}
    else:
      fn = lambda: eval_reference.reference_metrics(qc, dc, ql, dl, top_k=(top_k,) if top_k else (), pn=pn)
    base = peak_rss_mib()
    times = []
    for _ in range(repeat):
      start = time.perf_counter()
      out = fn()
      times.append(time.perf_counter() - start)
    times = [t * num_q / qc.shape[0] for t in times]  # scaled when run on a subset
    result["map"] = out["map@k"][top_k] if top_k else out["map"]
    result["p@n"] = [out["p@n"][n] for n in pn] if pn and ties == "index" else None
    result["subset"] = int(qc.shape[0])
  else:
    from jxhash import metrics
    warm = np.ones((1, BITS), np.int8), np.ones((3, BITS), np.int8), np.ones((1, 2)), np.ones((3, 2))
    start = time.perf_counter()
    metrics.evaluate(*warm, top_k=(1,), pn=(1,), ties=ties, backend=backend or metrics.default_backend())
    result["warmup_s"] = time.perf_counter() - start
    base = peak_rss_mib()
    times = []
    for _ in range(repeat):
      start = time.perf_counter()
      if pn:
        out = metrics.evaluate(qc, dc, ql, dl, top_k=(top_k,), pn=pn, ties=ties, backend=backend)
        value, p = out["map@k"][top_k], out["p@n"]["precision"]
      else:
        value, p = metrics.mean_average_precision(qc, dc, ql, dl, ties=ties, backend=backend), None
      times.append(time.perf_counter() - start)
    result["map"], result["p@n"] = value, p
    result["rss_growth_mib"] = peak_rss_mib() - base
    # Working memory of one more call as seen by tracemalloc (numpy allocations; the numba
    # kernel's per-thread buffers, ~10 bytes per database item per thread, are not traced).
    tracemalloc.start()
    if pn:
      metrics.evaluate(qc, dc, ql, dl, top_k=(top_k,), pn=pn, ties=ties, backend=backend)
    else:
      metrics.mean_average_precision(qc, dc, ql, dl, ties=ties, backend=backend)
    result["traced_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    if case == "million":  # the 20 queries the reference sees, for |ΔmAP|
      result["map_subset"] = metrics.mean_average_precision(qc[:20], dc, ql[:20], dl, top_k=top_k,
                                                            ties=ties, backend=backend)
  result.update(time_s=min(times), median_s=float(np.median(times)), base_rss_mib=base,
                peak_rss_mib=peak_rss_mib())
  print(json.dumps(result))


# -------------------------------------------------------------------------------- driver

def run(case, impl, ties, backend, repeat):
  cmd = [sys.executable, __file__, "--worker", case, impl, ties, backend or "auto", str(repeat)]
  env = dict(os.environ)
  if impl == "reference":
    # One BLAS thread: the reference's per-query matrix-vector products are too small to split,
    # and on a busy 2-core machine threaded BLAS made it 5x slower. This is its best case.
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
  out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
  if out.returncode:
    sys.exit(f"worker failed: {' '.join(cmd)}\n{out.stderr}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def describe_machine():
  import platform

  import jax
  cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
  try:
    import numba
    numba_version = numba.__version__
  except ImportError:
    numba_version = "absent"
  return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
          f"jax {jax.__version__} ({jax.default_backend()}), numba {numba_version}")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="mirflickr,nuswide,million,scaling")
  parser.add_argument("--repeat", type=int, default=3, help="timed calls of jxhash per measurement")
  parser.add_argument("--reference-repeat", type=int, default=1, help="timed calls of the reference")
  parser.add_argument("--no-reference", action="store_true", help="time jxhash only")
  parser.add_argument("--backends", default="auto,numpy", help="jxhash backends for the mirflickr case")
  parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    case, impl, ties, backend, repeat = args.worker
    worker(case, impl, ties, None if backend == "auto" else backend, int(repeat))
    return

  print(describe_machine())
  print(f"load average before: {os.getloadavg()}")
  header = (f"{'case':<11} {'ties':<8} {'impl':<15} {'time s':>8} {'median':>8} {'ratio':>7} "
            f"{'max|ΔmAP|':>10} {'peak RSS MiB':>12} {'+RSS MiB':>9} {'traced MiB':>9}")
  cases = args.cases.split(",")
  if "scaling" in cases:
    cases.remove("scaling")
    cases += ["scale-10k", "scale-100k", "scale-1m"]
  print(header)
  for case in cases:
    for ties in ("index", "average"):
      ref = None
      # No per-query reference of the tie-averaged AP@k exists, so million/average runs alone.
      if not args.no_reference and not case.startswith("scale") and not (case == "million" and ties == "average"):
        ref = run(case, "reference", ties, None, args.reference_repeat)
        print(f"{case:<11} {ties:<8} {'reference':<15} {ref['time_s']:8.3f} {ref['median_s']:8.3f} "
              f"{'':>7} {'':>10} {ref['peak_rss_mib']:12.0f}"
              + (f"   (time scaled from {ref['subset']} queries)" if case == "million" else ""))
      backends = args.backends.split(",") if case == "mirflickr" else ["auto"]
      for backend in backends:
        got = run(case, "jxhash", ties, None if backend == "auto" else backend, args.repeat)
        ratio = f"{ref['time_s'] / got['time_s']:7.1f}" if ref else f"{'':>7}"
        delta = ""
        if ref:
          mine = got["map_subset"] if case == "million" else got["map"]
          d = abs(mine - ref["map"])
          if ref.get("p@n") and got.get("p@n") and case != "million":
            d = max(d, *(abs(a - b) for a, b in zip(got["p@n"], ref["p@n"])))
          delta = f"{d:.1e}"
        label = f"jxhash/{backend}"
        print(f"{case:<11} {ties:<8} {label:<15} {got['time_s']:8.3f} {got['median_s']:8.3f} {ratio} "
              f"{delta:>10} {got['peak_rss_mib']:12.0f} {got['rss_growth_mib']:9.0f} "
              f"{got['traced_peak_mib']:9.1f}   (warm-up {got['warmup_s']:.2f} s, mAP {got['map']:.6f})")
  print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
  main()
