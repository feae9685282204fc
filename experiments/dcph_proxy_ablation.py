"""DCPH proxy stage: PSLDH's objective (the default) against the earlier jxhash reconstruction.

Two parts, both printed as markdown:

1. Wikipedia mAP@all (query -> retrieval, mean ± std over model seeds) of each variant in
   VARIANTS, read from the results files that `--run` writes with experiments/run.py (one
   `--seeds N` run per variant and code length; same split, same model seeds). Proxy variants
   are compared with the old default (the jxhash reconstruction), the hash-stage ablations
   ("new default + ...") with the new default: the difference of the means ± the std over
   seeds of the per-seed differences (seed i of one variant against seed i of the other).
2. The trained proxies' fingerprint (mean |column sum|, fraction of category pairs with a
   positive inner product, mean pairwise cosine, min Hamming distance), mean over model seeds,
   for the MIRFlickr-25K categories (C = 24; the proxy stage sees only the C one-hots, so only C
   matters) and Wikipedia's (C = 10), next to random ±1 codes and the statistics of the proxy
   files shipped with the public DCPH port (MIRFlickr, K = 16..64).

    python experiments/dcph_proxy_ablation.py --run        # train what is missing, then print
    python experiments/dcph_proxy_ablation.py              # print from existing results files
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys

from jxhash import cli
from jxhash.errors import UserError

RUN_SCRIPT = pathlib.Path(__file__).resolve().parent / "run.py"  # executed as a program, not imported

# name -> (results file stem, config overrides as for --set); a str names a preset of dcph instead
# (`--preset pairwise-proxy`: jxhash's earlier proxy stage). Every PSLDH variant names its beta, so the
# commands do not depend on the current default.
VARIANTS = {
    "old (reconstruction)": ("old", "pairwise-proxy"),
    "new default: PSLDH, β=0.01": ("default", {"proxy_beta": "0.01"}),
    "PSLDH, β=1": ("psldh-beta-1", {"proxy_beta": "1"}),
    "PSLDH + PSLDH's net (512, no BN), β=0.01": (
        "psldh-net-beta-0.01", {"proxy_hidden": "512", "proxy_batchnorm": "false", "proxy_beta": "0.01"}),
    "PSLDH + PSLDH's net (512, no BN), β=1": (
        "psldh-net-beta-1", {"proxy_hidden": "512", "proxy_batchnorm": "false", "proxy_beta": "1"}),
    "new default + text lr = image lr (Paddle port)": (
        "text-lr-image-lr", {"proxy_beta": "0.01", "text_lr": "0", "text_lr_decay_steps": "0"}),
    "new default + positives in denominator": (
        "positives-in-den", {"proxy_beta": "0.01", "positives_in_denominator": "true"}),
}
OLD, DEFAULT, BETA1 = "old (reconstruction)", "new default: PSLDH, β=0.01", "PSLDH, β=1"
BITS = {32: list(VARIANTS), 16: [OLD, DEFAULT, BETA1], 64: [OLD, DEFAULT, BETA1]}
SHIPPED = "1.7–2.4 | 0.29–0.39 | −0.035 to −0.024 | —"


def preset(name: str) -> str | None:
  """The dcph preset variant `name` runs at, or None (the defaults)."""
  values = VARIANTS[name][1]
  return values if isinstance(values, str) else None


def overrides(name: str) -> dict:
  """The --set overrides of variant `name` (over its preset)."""
  values = VARIANTS[name][1]
  return {} if isinstance(values, str) else values


def results_path(args, name: str, bits: int) -> pathlib.Path:
  return pathlib.Path(args.results) / f"{VARIANTS[name][0]}-{bits}.json"


def command(args, name: str, bits: int) -> list[str]:
  out = results_path(args, name, bits)
  cmd = ["python", "experiments/run.py", "--method=dcph", "--dataset=wikipedia", f"--data-dir={args.data_dir}",
         f"--bits={bits}", f"--seeds={args.seeds}", "--no-checkpoint", "--no-progress", f"--out={out}"]
  cmd += [f"--preset={preset(name)}"] if preset(name) else []
  return cmd + [f"--set={k}={v}" for k, v in overrides(name).items()]


def load(args, name: str, bits: int) -> dict | None:
  path = results_path(args, name, bits)
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"results file {path}: cannot read it as JSON ({e})") from e


def reference(name: str) -> str:
  """Proxy variants are compared with the old default, hash-stage ablations with the new one."""
  return DEFAULT if name.startswith("new default +") else OLD


def map_table(args) -> str:
  import numpy as np
  lines = ["| bits | variant | I→T mAP | T→I mAP | Δ against | ΔI→T | ΔT→I | proxies of seed 0: min Hamming, mean abs column sum, positive pairs, mean cosine |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for bits, names in BITS.items():
    for name in names:
      r = load(args, name, bits)
      if r is None:
        lines.append(f"| {bits} | {name} | (not run) | | | | | |")
        continue
      cells = [f"{r['map'][d]:.4f} ± {r['map_std'][d]:.4f}" for d in ("i2t", "t2i")]
      base = load(args, reference(name), bits)
      if base is None or name == OLD:
        cells += ["—", "—", "—"]
      else:
        cells.append(reference(name).split(":")[0])
        for d in ("i2t", "t2i"):
          diff = np.array([a[d]["map"] - b[d]["map"] for a, b in zip(r["per_seed"], base["per_seed"])])
          cells.append(f"{diff.mean():+.4f} ± {diff.std():.4f}")
      m = r["method_report"]
      cells.append(f"{m['proxy_min_hamming']:.0f}, {m['proxy_mean_abs_column_sum']:.2f}, "
                   f"{m['proxy_positive_pair_fraction']:.2f}, {m['proxy_mean_cosine']:+.3f}")
      lines.append(f"| {bits} | {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def fingerprint_table(args) -> str:
  import jax
  import numpy as np
  from jxhash import config as config_lib
  from jxhash.methods import dcph

  names = list(VARIANTS)[:5]
  keys = ("proxy_mean_abs_column_sum", "proxy_positive_pair_fraction", "proxy_mean_cosine", "proxy_min_hamming")
  lines = ["| C | K | proxies | mean abs column sum | positive pairs | mean cosine | min Hamming |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  rng = np.random.default_rng(0)
  seeds = jax.numpy.arange(args.seeds)
  for c, bits in ((24, 16), (24, 32), (24, 64), (10, 32)):
      rows = []
      for name in names:
        config = dataclasses.replace(config_lib.apply_preset(dcph.SPEC, preset(name)), bits=bits)
        config = config_lib.apply_overrides(config, [f"{k}={v}" for k, v in overrides(name).items()])
        # the init key of model seed s, as jxhash.training.runstate.init_state derives it
        proxies = jax.vmap(lambda seed: dcph.train_proxies(jax.random.fold_in(jax.random.PRNGKey(seed), 0),
                                                           config, c))(seeds)
        stats = [{**dcph.proxy_fingerprint(p), **dcph.proxy_distances(p)} for p in np.asarray(proxies)]
        rows.append((name, [np.mean([s[k] for s in stats]) for k in keys]))
      randoms = [np.where(rng.normal(size=(c, bits)) >= 0, 1.0, -1.0) for _ in range(1000)]
      stats = [{**dcph.proxy_fingerprint(p), **dcph.proxy_distances(p)} for p in randoms]
      rows.append(("random ±1 (1000 draws)", [np.mean([s[k] for s in stats]) for k in keys]))
      for name, v in rows:
        lines.append(f"| {c} | {bits} | {name} | {v[0]:.2f} | {v[1]:.3f} | {v[2]:+.3f} | {v[3]:.1f} |")
      if c == 24:
        lines.append(f"| 24 | {bits} | shipped DCPH files (K = 16..64) | " + SHIPPED + " |")
  return "\n".join(lines)


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__)
  p.add_argument("--run", action="store_true", help="train the variants whose results file is missing")
  p.add_argument("--data-dir", default="../shared/data/wikipedia",
                 help="Wikipedia folder (default: ../shared/data/wikipedia, relative to the current directory)")
  p.add_argument("--results", default="results/ablations/dcph",
                 help="folder of the results files (default: results/ablations/dcph, relative to the current "
                      "directory)")
  p.add_argument("--seeds", type=cli.int_at_least(1), default=5)
  p.add_argument("--no-fingerprint", action="store_true", help="skip the proxy-only fingerprint table")
  return p


def run(args) -> None:
  if args.run:
    pathlib.Path(args.results).mkdir(parents=True, exist_ok=True)
    for bits, names in BITS.items():
      for name in names:
        if load(args, name, bits) is None:
          cmd = command(args, name, bits)
          print("$", " ".join(cmd), flush=True)
          # in the current directory, so --data-dir and --results mean the same paths as here
          done = subprocess.run([sys.executable, str(RUN_SCRIPT)] + cmd[2:])
          if done.returncode != 0:  # run.py has said why; its exit code is this script's
            raise SystemExit(done.returncode)
  print(f"Wikipedia, {args.seeds} model seeds per row (mean ± std; Δ: mean ± std of per-seed differences)\n")
  print(map_table(args))
  if not args.no_fingerprint:
    print(f"\nProxy fingerprint, mean over {args.seeds} seeds of the proxy stage alone\n")
    print(fingerprint_table(args))


def main(argv=None) -> int:
  return cli.main(run, argv, parser())


if __name__ == "__main__":
  sys.exit(main())
