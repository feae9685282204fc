"""Linear baselines, evaluated like every method: LSH, CCA -> sign, and a supervised ridge -> ITQ hash.

    jxhash baselines --baseline=cca-sign --dataset=wikipedia --data-dir=../shared/data/wikipedia --bits=32
    jxhash baselines --baseline=ridge-itq --dataset=wikipedia --data-dir=../shared/data/wikipedia \
        --bits=32 --seeds=5

All three work on the training split's standardised features and write a results file in the
format of `jxhash train` (so `jxhash report` tables them beside the methods):
- `lsh`: sign of independent Gaussian random projections of each modality (Charikar, STOC
  2002). The two modalities' hyperplanes are unrelated, so cross-modal retrieval is at chance:
  it is the floor a learned method must clear, measured on the same protocol.
- `cca-sign`: canonical correlation analysis (Hotelling, 1936) gives paired projections; the
  codes are the signs of the top `bits` canonical variates. Deterministic (one seed).
- `ridge-itq`: a supervised linear hash. Ridge regression maps each modality onto the centred
  multi-hot labels (n, C); ITQ (Gong & Lazebnik, CVPR 2011) learns one rotation of the joint
  label-space embeddings that makes their signs lose least; the codes are those signs. Its
  random initial rotation is the seed.
CCA and the label space have at most C (or min(D, T)) directions, so longer codes are capped
at that rank; the results file records `effective_bits`.
"""

from __future__ import annotations

import sys
import time

import numpy as np

BASELINES = ("lsh", "cca-sign", "ridge-itq")


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


def ridge(x: np.ndarray, y: np.ndarray, reg: float) -> np.ndarray:
  """W (D, C) minimising ||x W - y||² + reg n ||W||²."""
  n, d = x.shape
  return np.linalg.solve(x.T @ x + reg * n * np.eye(d), x.T @ y)


def itq(v: np.ndarray, rng: np.random.Generator, iterations: int = 50) -> np.ndarray:
  """ITQ's orthogonal rotation R (k, k) of centred data v (n, k): minimises ||sign(vR) - vR||²."""
  k = v.shape[1]
  r, _ = np.linalg.qr(rng.normal(size=(k, k)))
  for _ in range(iterations):
    b = np.where(v @ r >= 0, 1.0, -1.0)
    u, _, wt = np.linalg.svd(b.T @ v)
    r = (u @ wt).T
  return r


def fit_encoder(name: str, x: np.ndarray, y: np.ndarray, labels: np.ndarray, bits: int, seed: int, reg: float):
  """(encode(modality, features) -> ±1 int8 codes, effective bits), fitted on the training split.

  Args:
    name: one of BASELINES.
    x, y: (n, D), (n, T) standardised training features.
    labels: (n, C) training labels (used by ridge-itq only).
    bits: the code length asked for.
    seed: the random projections' (lsh) or ITQ's initial rotation's (ridge-itq) seed.
    reg: ridge added to the covariances (cca-sign) or the regression (ridge-itq).
  """
  rng = np.random.default_rng(seed)
  if name == "lsh":
    proj = {"image": rng.normal(size=(x.shape[1], bits)), "text": rng.normal(size=(y.shape[1], bits))}
    shift = {"image": 0.0, "text": 0.0}
    dims = bits
  elif name == "cca-sign":
    dims = min(bits, x.shape[1], y.shape[1])
    px, py = cca(x, y, dims, reg)
    proj, shift = {"image": px, "text": py}, {"image": 0.0, "text": 0.0}
  else:
    target = labels - labels.mean(0)
    w = {"image": ridge(x, target, reg), "text": ridge(y, target, reg)}
    joint = np.concatenate([x @ w["image"], y @ w["text"]])
    mean = joint.mean(0)
    # PCA of the joint label-space embeddings to at most `bits` directions, then ITQ's rotation
    _, _, vt = np.linalg.svd(joint - mean, full_matrices=False)
    dims = min(bits, vt.shape[0])
    rotate = vt[:dims].T @ itq((joint - mean) @ vt[:dims].T, rng)
    proj = {m: w[m] @ rotate for m in w}
    shift = {m: mean @ rotate for m in w}

  def encode(modality: str, features: np.ndarray) -> np.ndarray:
    return np.where(features @ proj[modality] - shift[modality] >= 0, 1, -1).astype(np.int8)

  return encode, dims


def run(args) -> dict:
  from jxhash import data as data_lib, fileio, metrics
  from jxhash.training import evaluation
  from jxhash.training import inputs
  from jxhash.runs import results
  from jxhash.errors import UserError
  if args.baseline not in BASELINES:
    raise UserError(f"--baseline {args.baseline!r}: choose one of {', '.join(BASELINES)}")
  workdir = fileio.require_writable_dir(args.workdir, what="--workdir")
  out = fileio.require_writable_file(workdir / args.out, what="--out") if args.out else None
  data_dir = fileio.resolve(args.data_dir) if args.data_dir else None
  dataset = args.dataset or "synthetic"
  data = data_lib.load(dataset, data_dir, split=args.split or "random", seed=args.split_seed or 0,
                       **data_lib.parse_options(dataset, args.data_option))
  if data.text_tokens:
    raise UserError(f"--baseline {args.baseline}: it reads text features, and {data.name!r} holds CLIP token ids; "
                    "load the dataset with its text features")
  t0 = time.perf_counter()
  stats = inputs.fit_normalizer(data, "standardize")
  feats = {(m, s): inputs.normalize(stats, m, getattr(data, m)[getattr(data, s)]).astype(np.float64)
           for m in ("image", "text") for s in ("train", "query", "retrieval")}
  seeds = [0] if args.baseline == "cca-sign" else list(range(args.seed, args.seed + args.seeds))
  per_seed, dims = [], None
  for seed in seeds:
    encode, dims = fit_encoder(args.baseline, feats["image", "train"], feats["text", "train"],
                               data.labels[data.train].astype(np.float64), args.bits, seed, args.reg)
    codes = {(m, s): encode(m, feats[m, s]) for m in ("image", "text") for s in ("query", "retrieval")}
    per_seed.append({d: metrics.evaluate(codes[qm, "query"], codes[dbm, "retrieval"], data.labels[data.query],
                                         data.labels[data.retrieval], top_k=(100, 1000))
                     for d, (qm, dbm) in evaluation.DIRECTIONS.items()})
  final = evaluation.average_over_seeds(per_seed)
  res = {"method": args.baseline, "dataset": data.name, "bits": args.bits, "effective_bits": dims,
         "map": {d: final[d]["map"] for d in final}, "metrics": final, "selected": "closed form",
         "config": {"bits": args.bits, "reg": args.reg}, "settings": f"reg={args.reg}, effective_bits={dims}",
         "seed": seeds[0], "num_seeds": len(seeds), "split": data.split_info, "split_sizes": data.sizes(),
         "train_time_s": round(time.perf_counter() - t0, 2), "environment": results.environment(),
         "run_name": f"{args.baseline}-{data.name}-{args.bits}bits"}
  if len(seeds) > 1:
    res["map_std"] = {d: final[d]["map_std"] for d in final}
    scalars = [{d: results.scalar_metrics(r[d]) for d in r} for r in per_seed]
    res["seed_stats"] = results.seed_statistics(scalars)
    res["per_seed"] = [{"seed": s, **r} for s, r in zip(seeds, scalars)]
  out = out or workdir / "results" / f"{res['run_name']}.json"
  results.write(out, res)
  std = res.get("map_std")
  print(f"{args.baseline} {data.name} {args.bits} bits (effective {dims}), {len(seeds)} seed(s): "
        f"I->T {res['map']['i2t']:.4f}" + (f" ± {std['i2t']:.4f}" if std else "")
        + f", T->I {res['map']['t2i']:.4f}" + (f" ± {std['t2i']:.4f}" if std else "") + f"; results: {out}")
  return res


EXAMPLES = ["jxhash baselines --baseline=lsh --bits=16",
            "jxhash baselines --baseline=ridge-itq --dataset=wikipedia --data-dir=../shared/data/wikipedia --seeds=5"]


def main(argv=None) -> int:
  from jxhash import cli
  from jxhash.commands import flags
  p = flags.parser(__doc__.split("\n")[0], EXAMPLES)
  p.add_argument("--baseline", required=True, choices=BASELINES)
  flags.add_data_flags(p)
  flags.add_bits(p, default=32, help="code length (default 32; cca-sign and ridge-itq are capped at their rank)")
  p.add_argument("--seed", type=cli.int_at_least(0), default=0, help="first random seed")
  flags.add_seeds(p, help="random seeds (lsh, ridge-itq)")
  p.add_argument("--reg", type=cli.float_at_least(0.0), default=1e-3,
                 help="ridge added to the covariances / regression")
  flags.add_workdir(p)
  p.add_argument("--out", default=None, help="results JSON path (default: <workdir>/results/<baseline>-<dataset>-"
                                              "<bits>bits.json)")
  return cli.main(run, argv, p)


if __name__ == "__main__":
  sys.exit(main())
