"""CCA -> sign: the classic linear cross-modal hashing baseline, evaluated like every method.

    python experiments/cca_baseline.py --dataset=wikipedia --data-dir=../shared/data/wikipedia --bits=32

Canonical correlation analysis (Hotelling, 1936) on the standardised training features gives
paired projections; the codes are the signs of the top `bits` canonical variates. CCA has at
most min(image dim, text dim) directions (10 on Wikipedia): longer codes are capped at that
rank, and the results file records `effective_bits`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def cca(x: np.ndarray, y: np.ndarray, dims: int, reg: float = 1e-3):
  """Projections (Dx, dims), (Dy, dims) of regularised CCA on centred x (n, Dx), y (n, Dy)."""
  n = x.shape[0]
  cxx = x.T @ x / n + reg * np.eye(x.shape[1])
  cyy = y.T @ y / n + reg * np.eye(y.shape[1])
  cxy = x.T @ y / n
  wx = np.linalg.inv(np.linalg.cholesky(cxx)).T  # cxx^{-1/2} up to rotation
  wy = np.linalg.inv(np.linalg.cholesky(cyy)).T
  u, _, vt = np.linalg.svd(wx.T @ cxy @ wy)
  return wx @ u[:, :dims], wy @ vt.T[:, :dims]


def main(argv=None) -> int:
  sys.path.insert(0, str(ROOT))
  from jxhash import data as data_lib, inputs, metrics, results, train
  from jxhash.errors import UserError

  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="synthetic")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--split-seed", type=int, default=0)
  p.add_argument("--bits", type=int, default=32)
  p.add_argument("--reg", type=float, default=1e-3, help="ridge added to the covariances")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  try:
    data = data_lib.load(args.dataset, args.data_dir, seed=args.split_seed)
    t0 = time.perf_counter()
    stats = inputs.fit_normalizer(data, "standardize")
    x, y = (inputs.normalize(stats, m, getattr(data, m)[data.train]) for m in ("image", "text"))
    dims = min(args.bits, x.shape[1], y.shape[1])
    px, py = cca(x.astype(np.float64), y.astype(np.float64), dims, args.reg)
    code = {"image": lambda a: np.where(a @ px >= 0, 1, -1), "text": lambda a: np.where(a @ py >= 0, 1, -1)}
    enc = {(m, s): code[m](inputs.normalize(stats, m, getattr(data, m)[getattr(data, s)]))
           for m in ("image", "text") for s in ("query", "retrieval")}
    final = {}
    for d, (qm, dbm) in train.DIRECTIONS.items():
      final[d] = metrics.evaluate(enc[qm, "query"], enc[dbm, "retrieval"], data.labels[data.query],
                                  data.labels[data.retrieval], top_k=(100, 1000))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  res = {"method": "cca-sign", "dataset": data.name, "bits": args.bits, "effective_bits": dims,
         "map": {d: final[d]["map"] for d in final}, "metrics": final, "selected": "closed form",
         "config": {"reg": args.reg}, "settings": f"reg={args.reg}, effective_bits={dims}",
         "seed": None, "num_seeds": 1, "split": data.split_info, "split_sizes": data.sizes(),
         "train_time_s": round(time.perf_counter() - t0, 2), "environment": results.environment()}
  out = pathlib.Path(args.out or ROOT / "results" / f"cca-sign-{data.name}-{args.bits}bits.json")
  results.write(out, res)
  print(f"cca-sign {data.name} {args.bits} bits (effective {dims}): I->T {res['map']['i2t']:.4f}, "
        f"T->I {res['map']['t2i']:.4f}; results: {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
