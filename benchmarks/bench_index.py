"""HashIndex against FAISS, in one process: exact flat search, multi-index hashing, FAISS's
approximate binary indexes. Prints every table and regenerates benchmarks/INDEX.md.

    python benchmarks/bench_index.py                  # the full grid (about 15 min on 2 cores)
    python benchmarks/bench_index.py --quick          # 1M x 64 bits only, nothing written
    python benchmarks/bench_index.py --sizes 1000000 --bits 64 --out /tmp/INDEX.md

Data: N database codes and 1000 queries from one of two distributions --
  uniform     independent fair bits: the worst case for any index, and for MIH in particular.
  clustered   like a trained model's codes: 24 label prototypes, each item takes 1-3 labels,
              its code is the bitwise majority of its labels' prototypes, then every bit flips
              with the item's own probability drawn from U(5 %, 15 %). Queries likewise.
Both engines see the very same bits (jxhash packed words; FAISS their bytes, same layout).

Exactness is checked on every run, not assumed: jxhash's flat and MIH answers must be
identical (ids and distances) or the benchmark stops; FAISS's distances must equal jxhash's,
every FAISS id must really be at the distance FAISS reports, and the table shows for how many
queries FAISS's ids equal jxhash's once FAISS's ties are put in jxhash's (distance, insertion
index) order -- the rest differ only in which of several items at the k-th distance fill the
last places, which FAISS leaves unspecified.

Timing: each measurement is repeated (--repeats) with jxhash and FAISS interleaved, and the
best and the median are reported; batch-1 latency is the median over --latency-queries single
queries. The 1-minute load average (other sessions share the cores) is recorded per row.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import platform
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# numba (its OpenMP layer) and FAISS each bring an OpenMP runtime; with the default active wait
# their idle threads spin against each other, and on 2 shared cores one FAISS single-query search
# with 2 threads took 140 ms instead of 1-3 ms. Passive waiting removes that artefact for both.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from jxhash import codes as codes_lib  # noqa: E402
from jxhash import fileio  # noqa: E402
from jxhash.index import HashIndex  # noqa: E402

PROTOTYPES = 24


# ------------------------------------------------------------------ data


def uniform_words(rng, n, bits):
  """(n, W) packed codes with independent fair bits."""
  return codes_lib.from_bytes(rng.integers(0, 256, size=(n, -(-bits // 8)), dtype=np.uint8), bits)


def clustered_words(rng, n, bits, prototypes, tie, chunk=1 << 18):
  """(n, W) packed multi-label codes: majority of 1-3 label prototypes, then 5-15 % bit flips."""
  c = prototypes.shape[0]
  out = np.empty((n, codes_lib.num_words(bits)), np.uint64)
  for start in range(0, n, chunk):
    m = min(chunk, n - start)
    count = rng.integers(1, 4, size=m)
    picks = np.argsort(rng.random((m, c), dtype=np.float32), axis=1)[:, :3]
    labels = np.zeros((m, c), np.float32)
    for j in range(3):
      rows = np.flatnonzero(count > j)
      labels[rows, picks[rows, j]] = 1
    votes = labels @ prototypes + 0.5 * tie  # the tie vector breaks even votes
    rate = rng.uniform(0.05, 0.15, size=(m, 1)).astype(np.float32)
    flips = rng.random((m, bits), dtype=np.float32) < rate
    out[start:start + m] = codes_lib.pack((votes > 0) != flips)
  return out


def make_data(kind, n, bits, queries, seed):
  rng = np.random.default_rng([seed, bits, n])
  if kind == "uniform":
    return uniform_words(rng, n, bits), uniform_words(rng, queries, bits)
  prototypes = np.where(rng.random((PROTOTYPES, bits)) < 0.5, 1.0, -1.0).astype(np.float32)
  tie = np.where(rng.random(bits) < 0.5, 1.0, -1.0).astype(np.float32)
  return (clustered_words(rng, n, bits, prototypes, tie), clustered_words(rng, queries, bits, prototypes, tie))


# ------------------------------------------------------------------ measuring


def load1() -> float:
  return os.getloadavg()[0]


def set_threads(faiss, threads):
  import numba
  numba.set_num_threads(threads)
  faiss.omp_set_num_threads(threads)


def latency(fn, count):
  """Median seconds of fn(i) over i < count (one warm-up call first)."""
  fn(0)
  times = []
  for i in range(count):
    start = time.perf_counter()
    fn(i)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def duration(fn):
  start = time.perf_counter()
  result = fn()
  return time.perf_counter() - start, result


def best_median(values, fmt):
  values = np.asarray(values)
  return f"{fmt(values.min())} / {fmt(np.median(values))}" if len(values) > 1 else fmt(values[0])


def ms(seconds):
  return f"{seconds * 1e3:.3g}"


def qps(count):
  return lambda seconds: f"{count / seconds:,.0f}"


def faiss_check(words, q_words, bits, f_ids, f_dist, our_dist):
  """(same distances, FAISS ids at their stated distances, rows equal after stable re-order)."""
  same_dist = np.array_equal(f_dist.astype(np.int64), our_dist.astype(np.int64))
  found = np.zeros(f_dist.shape, np.int64)
  for w in range(words.shape[1]):
    found += np.bitwise_count(words[f_ids, w] ^ q_words[:, None, w])
  valid = np.array_equal(found, f_dist) and all(len(set(row)) == len(row) for row in f_ids)
  order = np.lexsort((f_ids, f_dist), axis=-1)
  return same_dist, valid, np.take_along_axis(f_ids, order, axis=1)


# ------------------------------------------------------------------ sections


def faiss_flat(faiss, words, bits):
  """FAISS's exact binary index over the same bits (bytes of the packed words, same layout)."""
  flat = faiss.IndexBinaryFlat(bits)
  rows = codes_lib.to_bytes(words, bits)
  for start in range(0, len(rows), 1 << 20):
    flat.add(rows[start:start + (1 << 20)])
  return flat


def bench_flat(faiss, flat, index, words, q_words, q_codes, args, threads):
  """Exact top-k: jxhash flat vs FAISS IndexBinaryFlat at one thread count; one table row."""
  bits = index.bits
  q_bytes = codes_lib.to_bytes(q_words, bits)
  set_threads(faiss, threads)
  k, batch = args.k, q_codes.shape[0]
  repeats = args.repeats if len(index) <= 2_000_000 else 1
  index.search(q_codes[:8], k)  # compile (or load) the kernels outside the timings
  flat.search(q_bytes[:8], k)
  lat_ours, lat_faiss, thr_ours, thr_faiss = [], [], [], []
  for _ in range(repeats):
    lat_ours.append(latency(lambda i: index.search(q_codes[i:i + 1], k), args.latency_queries))
    lat_faiss.append(latency(lambda i: flat.search(q_bytes[i:i + 1], k), args.latency_queries))
    seconds, (ours_ids, ours_dist) = duration(lambda: index.search(q_codes, k))
    thr_ours.append(seconds)
    seconds, (f_dist, f_ids) = duration(lambda: flat.search(q_bytes, k))
    thr_faiss.append(seconds)
  same_dist, valid, reordered = faiss_check(words, q_words, bits, f_ids, f_dist, ours_dist)
  same_rows = float(np.mean(np.all(reordered == ours_ids, axis=1)))
  if not (same_dist and valid):
    raise SystemExit(f"FAISS and jxhash disagree at N={len(index)}, {bits} bits: distances {same_dist}, ids {valid}")
  return {
      "lat": best_median(lat_ours, ms), "lat_faiss": best_median(lat_faiss, ms),
      "lat_ratio": np.median(lat_faiss) / np.median(lat_ours), "lat_ratio_best": min(lat_faiss) / min(lat_ours),
      "thr": best_median(thr_ours, qps(batch)), "thr_faiss": best_median(thr_faiss, qps(batch)),
      "thr_ratio": np.median(thr_faiss) / np.median(thr_ours), "thr_ratio_best": min(thr_faiss) / min(thr_ours),
      "same_rows": same_rows, "faiss_bytes": flat.ntotal * flat.code_size, "load": load1(),
  }


def bench_mih(index, q_codes, args, threads):
  """Exact top-k and radius: MIH vs the flat scan on the same queries; identical or stop."""
  import numba
  numba.set_num_threads(threads)
  k, batch = args.mih_k, q_codes.shape[0]
  tables = index._tables()  # built (and timed) by the caller
  repeats = args.repeats if len(index) <= 2_000_000 else 1
  radius = index.bits // 8
  for engine in ("mih", "flat"):  # compile (or load) the kernels outside the timings
    index.search(q_codes[:32], k, engine=engine)
    index.search_radius(q_codes[:2], radius, engine=engine)
  t_mih, t_flat, l_mih, l_flat = [], [], [], []
  for _ in range(repeats):
    seconds, (m_ids, m_dist) = duration(lambda: index.search(q_codes, k, engine="mih"))
    t_mih.append(seconds)
    gave_up = tables.gave_up
    seconds, (f_ids, f_dist) = duration(lambda: index.search(q_codes, k))
    t_flat.append(seconds)
    l_mih.append(latency(lambda i: index.search(q_codes[i:i + 1], k, engine="mih"), args.latency_queries))
    l_flat.append(latency(lambda i: index.search(q_codes[i:i + 1], k), args.latency_queries))
  if not (np.array_equal(m_ids, f_ids) and np.array_equal(m_dist, f_dist)):
    raise SystemExit(f"MIH and the flat scan disagree at N={len(index)}, {index.bits} bits")
  r_queries = q_codes[:args.radius_queries]
  r_mih, found_mih = duration(lambda: index.search_radius(r_queries, radius, engine="mih"))
  r_flat, found_flat = duration(lambda: index.search_radius(r_queries, radius))
  if not all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(found_mih, found_flat)):
    raise SystemExit(f"MIH and the flat scan disagree on radius {radius} at N={len(index)}, {index.bits} bits")
  return {
      "plan": f"{tables.m} x {'/'.join(str(s) for s in sorted(set(tables.lengths.tolist()), reverse=True))}",
      "tables_mib_per_m": tables.nbytes / 2**20 / (len(index) / 1e6),
      "thr": best_median(t_mih, qps(batch)), "thr_flat": best_median(t_flat, qps(batch)),
      "ratio": np.median(t_flat) / np.median(t_mih), "ratio_best": min(t_flat) / min(t_mih),
      "lat": best_median(l_mih, ms), "lat_flat": best_median(l_flat, ms), "gave_up": gave_up,
      "kth": float(np.median(m_dist[:, -1])), "radius": radius,
      "r_ratio": r_flat / r_mih, "r_found": float(np.mean([len(a[0]) for a in found_mih])),
      "load": load1(),
  }


def bench_approximate(faiss, words, q_words, exact_dist, bits, k, threads):
  """FAISS's approximate binary indexes: throughput and how often they find the exact top-k."""
  set_threads(faiss, threads)
  rows = codes_lib.to_bytes(words, bits)
  q_bytes = codes_lib.to_bytes(q_words, bits)
  n = len(rows)
  hash_bits = min(24, max(8, round(math.log2(n)) - 2))
  configs = [
      (f"IndexBinaryHash(b={hash_bits}), nflip=2", lambda: faiss.IndexBinaryHash(bits, hash_bits), {"nflip": 2}),
      ("IndexBinaryMultiHash(nhash=4, b=16), nflip=1", lambda: faiss.IndexBinaryMultiHash(bits, 4, 16), {"nflip": 1}),
      ("IndexBinaryIVF(nlist=1024), nprobe=16", lambda: faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, 1024),
       {"nprobe": 16}),
  ]
  out = []
  for name, make, params in configs:
    index = make()
    start = time.perf_counter()
    if not index.is_trained:
      train = rows[np.random.default_rng(0).choice(n, size=min(n, 256 * 1024), replace=False)]
      index.train(train)
    for s in range(0, n, 1 << 20):
      index.add(rows[s:s + (1 << 20)])
    build = time.perf_counter() - start
    for key, value in params.items():
      setattr(index, key, value)
    seconds, (dist, _) = duration(lambda: index.search(q_bytes, k))
    exact_rows = float(np.mean(np.all(dist == exact_dist, axis=1)))
    found = float(np.mean(np.sum(dist == exact_dist, axis=1) / k))  # -1 fills unfound places
    out.append({"name": name, "build": build, "thr": len(q_bytes) / seconds, "exact_rows": exact_rows,
                "found": found, "load": load1()})
    del index
  return out


# ------------------------------------------------------------------ report


def machine_line(faiss):
  import numba
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy {np.__version__}, "
          f"numba {numba.__version__}, faiss-cpu {faiss.__version__}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="1000000,10000000", help="database sizes, comma-separated")
  parser.add_argument("--bits", default="32,64,128", help="code lengths, comma-separated")
  parser.add_argument("--dists", default="uniform,clustered", help="code distributions")
  parser.add_argument("--threads", default="1,2", help="thread counts (numba and FAISS's OpenMP alike)")
  parser.add_argument("--k", type=int, default=100, help="k of the flat comparison")
  parser.add_argument("--mih-k", type=int, default=10, help="k of the MIH comparison")
  parser.add_argument("--batch", type=int, default=1000, help="queries per throughput batch")
  parser.add_argument("--latency-queries", type=int, default=50, help="single queries per latency median")
  parser.add_argument("--radius-queries", type=int, default=100, help="queries of the radius comparison")
  parser.add_argument("--repeats", type=int, default=3, help="repeats at <= 2M items (1 above)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no-approximate", action="store_true", help="skip FAISS's approximate indexes")
  parser.add_argument("--quick", action="store_true", help="1M x 64 bits, 1 thread, nothing written")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "INDEX.md"), help="markdown file to regenerate")
  parser.add_argument("--no-write", action="store_true", help="print only")
  args = parser.parse_args()
  import faiss
  if args.quick:
    args.sizes, args.bits, args.threads, args.no_write = "1000000", "64", "1", True
  out_path = None if args.no_write else fileio.require_writable_file(args.out, what="--out")
  sizes = [int(s) for s in args.sizes.split(",")]
  bit_list = [int(b) for b in args.bits.split(",")]
  if any(b % 8 or b < 8 for b in bit_list):
    parser.error(f"--bits {args.bits}: FAISS's binary indexes need multiples of 8")
  dists = args.dists.split(",")
  thread_list = [int(t) for t in args.threads.split(",")]
  command = " ".join(["python benchmarks/bench_index.py", *sys.argv[1:]])
  print(machine_line(faiss), flush=True)
  flat_rows, mih_rows, approx_rows, memory_rows = [], [], [], []
  load_start = load1()
  for n in sizes:
    for kind in dists:
      for bits in bit_list:
        words, q_words = make_data(kind, n, bits, args.batch, args.seed)
        index = HashIndex(bits)
        build, _ = duration(lambda: index.add_packed(words))
        q_codes = codes_lib.unpack(q_words, bits)
        label = dict(n=n, kind=kind, bits=bits)
        flat = faiss_flat(faiss, words, bits)
        for threads in thread_list:
          row = {**label, "threads": threads, **bench_flat(faiss, flat, index, words, q_words, q_codes, args, threads)}
          flat_rows.append(row)
          print(f"flat  {n:>10,} {kind:9} {bits:3}b {threads}t  batch-1 {row['lat']} ms vs FAISS {row['lat_faiss']} "
                f"(x{row['lat_ratio']:.2f})  batch-{args.batch} {row['thr']} q/s vs {row['thr_faiss']} "
                f"(x{row['thr_ratio']:.2f})  ids {row['same_rows']:.0%}  load {row['load']:.1f}", flush=True)
        del flat
        mih_build, tables = duration(index._tables)
        for threads in thread_list:
          row = {**label, "threads": threads, **bench_mih(index, q_codes, args, threads)}
          mih_rows.append(row)
          print(f"mih   {n:>10,} {kind:9} {bits:3}b {threads}t  {row['plan']}  {row['thr']} q/s vs flat "
                f"{row['thr_flat']} (x{row['ratio']:.1f}), batch-1 {row['lat']} vs {row['lat_flat']} ms, "
                f"scan fallbacks {row['gave_up']}, radius {row['radius']} x{row['r_ratio']:.1f}  load {row['load']:.1f}",
                flush=True)
        memory_rows.append({**label, "codes": index.nbytes / (n / 1e6) / 2**20, "ids": 8e6 / 2**20,
                            "faiss": (bits // 8) * 1e6 / 2**20, "mih": tables.nbytes / (n / 1e6) / 2**20,
                            "mih_positions": tables.tables.nbytes / (n / 1e6) / 2**20, "build": build,
                            "mih_build": mih_build, "plan": mih_rows[-1]["plan"]})
        if bits == 64 and not args.no_approximate:
          exact = index.search(q_codes, args.mih_k)[1]
          for row in bench_approximate(faiss, words, q_words, exact, bits, args.mih_k, 1):
            approx_rows.append({**label, **row})
            print(f"faiss {n:>10,} {kind:9} {bits:3}b  {row['name']}: {row['thr']:,.0f} q/s, exact top-{args.mih_k} "
                  f"{row['exact_rows']:.0%} of queries, build {row['build']:.1f} s", flush=True)
        del index, words, tables
  report = render(args, command, machine_line(faiss), flat_rows, mih_rows, approx_rows, memory_rows, load_start)
  print(report)
  if out_path:
    fileio.atomic_write(out_path, report, what="benchmark report")
    print(f"wrote {out_path}")


def render(args, command, machine, flat_rows, mih_rows, approx_rows, memory_rows, load_start) -> str:
  lines = ["# HashIndex benchmark: jxhash against FAISS", "",
           "Generated by the command below (do not edit by hand; rerun it):", "", "```", command, "```", "",
           f"Machine: {machine}. Load average (1 min) {load_start:.1f} at the start and "
           f"{load1():.1f} at the end: other sessions share these cores, so each row also records it. "
           "OMP_WAIT_POLICY=PASSIVE (set by the script): numba's and FAISS's OpenMP runtimes otherwise spin "
           "against each other in one process.", "",
           "Exact search everywhere: jxhash answers with the first k items of the stable ranking "
           "(ascending distance, ties by insertion index); MIH's answers are checked identical to the flat "
           "scan's on every query, and FAISS's distances identical to jxhash's.", ""]
  headline = [r for r in flat_rows if r["n"] == 1_000_000 and r["bits"] == 64]
  big = [r for r in mih_rows if r["n"] >= 10_000_000 and r["bits"] == 64 and r["kind"] == "clustered"]
  if headline or big:
    lines += ["## Headline", ""]
    for r in headline:
      lines.append(f"- 1M x 64 bits, {r['kind']}, {r['threads']} thread(s), k = {args.k}: jxhash / FAISS "
                   f"IndexBinaryFlat speed ratio {r['lat_ratio']:.2f} (best {r['lat_ratio_best']:.2f}) at batch 1, "
                   f"{r['thr_ratio']:.2f} (best {r['thr_ratio_best']:.2f}) at batch {args.batch}.")
    for r in big:
      lines.append(f"- {r['n'] // 1_000_000}M x 64 bits, clustered, k = {args.mih_k}, {r['threads']} thread(s): MIH "
                   f"{r['ratio']:.1f}x the exhaustive scan's batch-{args.batch} throughput ({r['thr']} vs "
                   f"{r['thr_flat']} queries/s), identical results; tables {r['tables_mib_per_m']:.0f} MiB per million "
                   "items on top of the codes.")
    lines.append("")
  lines += [f"## Exact top-{args.k}: jxhash flat scan vs FAISS IndexBinaryFlat", "",
            "Latency: median over single queries, in ms; throughput: a batch of "
            f"{args.batch} queries, in queries/s; \"a / b\" = best / median of the repeats. Ratio = FAISS time / "
            "jxhash time (median), so > 1 means jxhash is faster. \"Same ids\" = queries whose FAISS ids equal "
            "jxhash's once FAISS's equal distances are put in insertion order (distances are always identical).", "",
            "| items | codes | bits | threads | jxhash batch-1 ms | FAISS batch-1 ms | ratio | jxhash q/s | "
            "FAISS q/s | ratio | same ids | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in flat_rows:
    lines.append(f"| {r['n']:,} | {r['kind']} | {r['bits']} | {r['threads']} | {r['lat']} | {r['lat_faiss']} | "
                 f"{r['lat_ratio']:.2f} | {r['thr']} | {r['thr_faiss']} | {r['thr_ratio']:.2f} | "
                 f"{r['same_rows']:.0%} | {r['load']:.1f} |")
  lines += ["", f"## Exact top-{args.mih_k} and radius search: multi-index hashing vs the exhaustive scan", "",
            "Both are jxhash engines (the scan is the flat engine above); results identical on every query. "
            "Plan = tables x substring bits. Ratio = scan time / MIH time for the batch. Fallbacks = queries MIH "
            "handed to the scan because probing would have visited more than the scan (far queries). k-th = median "
            f"distance of the {args.mih_k}th neighbour. Radius: the first {args.radius_queries} queries, r = bits / 8.", "",
            "| items | codes | bits | threads | plan | MIH q/s | scan q/s | ratio | MIH batch-1 ms | "
            "scan batch-1 ms | fallbacks | k-th | radius ratio | in radius | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in mih_rows:
    lines.append(f"| {r['n']:,} | {r['kind']} | {r['bits']} | {r['threads']} | {r['plan']} | "
                 f"{r['thr']} | {r['thr_flat']} | {r['ratio']:.1f} | {r['lat']} | {r['lat_flat']} | {r['gave_up']} | "
                 f"{r['kth']:.0f} | {r['r_ratio']:.1f} | {r['r_found']:.0f} | {r['load']:.1f} |")
  lines += ["", "## Memory per million items (MiB)", "",
            "jxhash stores ceil(K / 64) uint64 words per code plus an int64 id; MIH adds per table the "
            "positions (4 bytes per item) and a copy of the codes in bucket order (what makes verification a "
            "sequential scan), plus 8-byte bucket offsets (2^s + 1 per table, shared by all items). FAISS's flat "
            "index keeps K / 8 bytes per code and no ids.", "",
            "| items | codes | bits | jxhash codes | ids | MIH plan | MIH tables | of which positions | FAISS flat | "
            "add_packed s | MIH build s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in memory_rows:
    lines.append(f"| {r['n']:,} | {r['kind']} | {r['bits']} | {r['codes']:.2f} | {r['ids']:.2f} | {r['plan']} | "
                 f"{r['mih']:.1f} | {r['mih_positions']:.1f} | {r['faiss']:.2f} | {r['build']:.2f} | "
                 f"{r['mih_build']:.1f} |")
  if approx_rows:
    lines += ["", f"## FAISS's hashing and IVF binary indexes (64 bits, k = {args.mih_k}, 1 thread)", "",
              "These are approximate: they probe some buckets or lists and miss what lies elsewhere. \"Exact "
              "queries\" = share of queries whose 10 distances equal the exact ones; \"found\" = share of the exact "
              "top-k distance places they match. Compare the MIH rows above (always exact).", "",
              "| items | codes | index | build s | q/s | exact queries | found | load |", "|---|---|---|---|---|---|---|---|"]
    for r in approx_rows:
      lines.append(f"| {r['n']:,} | {r['kind']} | {r['name']} | {r['build']:.1f} | {r['thr']:,.0f} | "
                   f"{r['exact_rows']:.0%} | {r['found']:.0%} | {r['load']:.1f} |")
  lines += ["", "## How it works, and the choices", "", *NOTES]
  return "\n".join(lines) + "\n"


NOTES = """\
- **Flat engine** (`jxhash/index/_scan.py`, numba): the database is word-major, so the distances of
  a block of 1024 items are one vectorised XOR + popcount loop per word (AVX2), into a uint8 buffer;
  one vectorised min then decides if anything in the block can enter the top-k. The top-k itself is a
  counting selection, not a heap: keep items below a threshold T (the smallest distance with k kept
  items at or below it), and at the end take everything below T plus the first items at T, in index
  order -- the stable tie order for free. Batches run queries in parallel; a single query is split
  over the threads when it has enough items.
- **Why not FAISS underneath**: the compiled scan is faster than `IndexBinaryFlat` on this machine
  (tables above), gives the stable tie order FAISS does not, and keeps FAISS out of the runtime
  dependencies. FAISS is a `test` extra (CI checks the file format against real FAISS) and a `bench`
  extra (this benchmark); the `faiss` engine (`search(..., engine="faiss")`) uses it when installed.
- **MIH engine** (`jxhash/index/mih.py`): Norouzi, Punjani & Fleet's multi-index hashing (CVPR 2012,
  TPAMI 2014): m substrings of ~log2(N) bits (at most 20), one table each, buckets probed at growing
  substring radius; exact by the pigeonhole principle, stopping as soon as every item at the current
  k-th distance must have been seen. Queries whose near neighbours are far (uniform codes, large k)
  would probe more buckets than a scan reads items: those are answered by the flat scan (the
  fallbacks column), so MIH is never much slower than the scan and is exact either way.
- **FAISS files**: `HashIndex.save(path, format="faiss")` writes FAISS's binary index format without
  importing faiss (`IndexBinaryFlat`, or `IndexBinaryIDMap` when ids are not 0..N-1);
  `HashIndex.load` reads those and jxhash files alike. Bit order: `jxhash.codes` packs bit i of a
  code into byte i // 8 at bit i % 8, which is FAISS's own layout (`fvecs2bitvecs`).
- CLI: `python experiments/index.py search --engine flat|mih|faiss`, `build --format jxhash|faiss`,
  `convert --format ...`.""".split("\n")


if __name__ == "__main__":
  main()
