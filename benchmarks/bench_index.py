"""HashIndex vs brute force over unpacked float32 codes: build, latency, throughput, memory.

    python benchmarks/bench_index.py                 # 1,000,000 x 64 bits, k = 100
    python benchmarks/bench_index.py --n 100000 --bits 128

Brute force = what one writes without an index: float32 ±1 codes (N, K), distances from one
matmul per query chunk, `np.argsort(kind="stable")` per row, first k. Its top-k is also checked
against the index's (same ids, same distances), so the speed-up compares equal answers.
Results go to benchmarks/INDEX.md by hand.
"""

import argparse
import os
import platform
import resource
import time

import numpy as np

from jxhash.index import HashIndex


def random_codes(rng, n, bits):
  return (rng.integers(0, 2, size=(n, bits), dtype=np.int8) * 2 - 1).astype(np.int8)


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def brute_top_k(db_f32, queries, k, chunk=25):
  """(Q, k) positions and distances by matmul + stable argsort, in query chunks (bounded memory)."""
  bits = db_f32.shape[1]
  out_pos, out_dist = [], []
  for s in range(0, len(queries), chunk):
    scores = queries[s:s + chunk].astype(np.float32) @ db_f32.T
    dist = (bits - scores) * 0.5
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    out_pos.append(order)
    out_dist.append(np.take_along_axis(dist, order, axis=1))
  return np.concatenate(out_pos), np.concatenate(out_dist)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--n", type=int, default=1_000_000, help="database items")
  parser.add_argument("--bits", type=int, default=64)
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--add-batch", type=int, default=100_000, help="items per add() call while building")
  parser.add_argument("--latency-queries", type=int, default=50, help="batch-1 queries timed (median)")
  parser.add_argument("--batch", type=int, default=1000, help="queries in the throughput batch")
  parser.add_argument("--brute-queries", type=int, default=100,
                      help="of the throughput batch, how many the (slow) brute force answers")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rng = np.random.default_rng(args.seed)
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}")
  print(f"database {args.n:,} x {args.bits} bits, k = {args.k}")

  # ------------------------------------------------------------ index
  codes_time = 0.0
  index = HashIndex(args.bits)
  start = time.perf_counter()
  for s in range(0, args.n, args.add_batch):
    t = time.perf_counter()
    batch = random_codes(rng, min(args.add_batch, args.n - s), args.bits)
    codes_time += time.perf_counter() - t  # generating codes is not building
    index.add(batch)
  build_s = time.perf_counter() - start - codes_time
  del batch
  per_item = index.nbytes / len(index)
  allocated = index._packed.nbytes + index._id_store.nbytes
  print(f"build: {build_s:.3f} s ({len(index) / build_s / 1e6:.1f} M items/s, adds of {args.add_batch:,})")
  print(f"codes: {per_item:.1f} bytes/item = {index.nbytes / 2**20 * 1e6 / args.n:.2f} MiB per million items"
        f" (+ 8 bytes/item ids); allocated codes+ids {allocated / 2**20:.1f} MiB")
  print(f"peak RSS after build: {peak_rss_mib():.0f} MiB")

  queries = random_codes(rng, max(args.latency_queries, args.batch), args.bits)
  index.search(queries[:1], args.k)  # warm up caches / allocator
  latencies = []
  for q in range(args.latency_queries):
    t = time.perf_counter()
    index.search(queries[q:q + 1], args.k)
    latencies.append(time.perf_counter() - t)
  index_latency = float(np.median(latencies))
  t = time.perf_counter()
  index_ids, index_dist = index.search(queries[:args.batch], args.k)
  index_batch_s = time.perf_counter() - t
  index_qps = args.batch / index_batch_s
  print(f"index: batch-1 latency median {index_latency * 1e3:.2f} ms (p90 {np.quantile(latencies, 0.9) * 1e3:.2f} ms);"
        f" batch-{args.batch}: {index_batch_s:.2f} s = {index_qps:,.0f} queries/s")
  print(f"peak RSS after index searches: {peak_rss_mib():.0f} MiB")

  # ------------------------------------------------------------ brute force
  t = time.perf_counter()
  db_f32 = index.codes().astype(np.float32)
  print(f"brute force codes: {db_f32.nbytes / args.n:.0f} bytes/item ({time.perf_counter() - t:.2f} s to unpack)")
  brute_top_k(db_f32, queries[:1], args.k)
  brute_lat = []
  for q in range(min(args.latency_queries, 10)):
    t = time.perf_counter()
    brute_top_k(db_f32, queries[q:q + 1], args.k)
    brute_lat.append(time.perf_counter() - t)
  brute_latency = float(np.median(brute_lat))
  m = min(args.brute_queries, args.batch)
  t = time.perf_counter()
  brute_pos, brute_dist = brute_top_k(db_f32, queries[:m], args.k)
  brute_s = time.perf_counter() - t
  brute_qps = m / brute_s
  print(f"brute: batch-1 latency median {brute_latency * 1e3:.1f} ms (over {len(brute_lat)});"
        f" {m} queries of the batch in chunks of 25: {brute_s:.2f} s = {brute_qps:,.1f} queries/s")
  same = np.array_equal(index_ids[:m], brute_pos) and np.array_equal(index_dist[:m], brute_dist.astype(np.int32))
  print(f"same top-{args.k} (ids and distances) on those {m} queries: {same}")
  print(f"peak RSS at the end (index + brute float32 copy): {peak_rss_mib():.0f} MiB")
  print(f"RATIOS index vs brute: latency {brute_latency / index_latency:.1f}x faster,"
        f" throughput {index_qps / brute_qps:.1f}x, code memory {db_f32.nbytes / index.nbytes:.0f}x smaller")
  if not same:
    raise SystemExit("index and brute force disagree")


if __name__ == "__main__":
  main()
