"""The plain per-query reference evaluation that `jxhash.metrics` is timed and checked against.

It follows the DCMH `calc_map` (jiangqy/DCMH-CVPR2017, `utils/calc_hammingranking.py`) and the
MATLAB `calcMapTopkMapTopkPreTopkRecLabel.m` loop structure: one query at a time, Hamming
distances by a ±1 dot product, a full argsort, precision at the ranks of the relevant items.
The only deliberate change is `argsort(kind="stable")`, i.e. ties broken by database index
(the MATLAB `sort` behaviour), so the result is deterministic and comparable to
`jxhash.metrics` with ties="index". Zero-relevant queries score 0 and count in the mean.
"""

from __future__ import annotations

import numpy as np


def reference_metrics(query_codes, db_codes, query_labels, db_labels, *, top_k=(), pn=()):
  """mAP@all, mAP@k and P@n by a per-query numpy loop.

  Args:
    query_codes, db_codes: (Q, K), (N, K) ±1 codes.
    query_labels, db_labels: (Q, C), (N, C) multi-hot 0/1 labels.
    top_k: cut-offs k; AP@k averages precision over the relevant items in the top k and
      divides by their number (0 if none).
    pn: the n of precision@n (hits in the top n divided by n).

  Returns:
    {"map": float, "map@k": {k: float}, "p@n": {n: float}}.
  """
  q_codes = np.asarray(query_codes, np.float64)
  db_codes = np.asarray(db_codes, np.float64)
  q_labels = np.asarray(query_labels, np.float64)
  db_labels = np.asarray(db_labels, np.float64)
  num_q, bits = q_codes.shape
  ap_all = 0.0
  ap_at = dict.fromkeys(top_k, 0.0)
  prec_at = dict.fromkeys(pn, 0.0)
  for i in range(num_q):
    relevant = (q_labels[i] @ db_labels.T > 0).astype(np.float64)
    if relevant.sum() == 0:
      continue
    dist = 0.5 * (bits - q_codes[i] @ db_codes.T)
    ranked = relevant[np.argsort(dist, kind="stable")]
    where = np.flatnonzero(ranked) + 1.0
    ap_all += np.mean(np.arange(1, where.size + 1) / where)
    for k in top_k:
      where_k = np.flatnonzero(ranked[:k]) + 1.0
      if where_k.size:
        ap_at[k] += np.mean(np.arange(1, where_k.size + 1) / where_k)
    for n in pn:
      prec_at[n] += ranked[:n].sum() / min(n, ranked.size)
  return {"map": ap_all / num_q, "map@k": {k: v / num_q for k, v in ap_at.items()},
          "p@n": {n: v / num_q for n, v in prec_at.items()}}


def reference_map(query_codes, db_codes, query_labels, db_labels, *, top_k=None) -> float:
  """mAP@all (top_k=None) or mAP@k by the reference loop."""
  if top_k is None:
    return reference_metrics(query_codes, db_codes, query_labels, db_labels)["map"]
  return reference_metrics(query_codes, db_codes, query_labels, db_labels, top_k=(top_k,))["map@k"][top_k]


def reference_tie_average_map(query_codes, db_codes, query_labels, db_labels) -> float:
  """Tie-aware mAP@all (expected AP over random orders within equal distances), query by query.

  Summed item by item rather than in closed form: a relevant item of a tie group with n items,
  r of them relevant, o items and h relevant items closer, sits at position t = 1..n of the
  group with probability 1/n and then has on average (t - 1)(r - 1)/(n - 1) relevant group
  members ahead of it, so its expected precision is
  (1/n) Σ_t (h + 1 + (t - 1)(r - 1)/(n - 1)) / (o + t).
  """
  q_codes = np.asarray(query_codes, np.float64)
  db_codes = np.asarray(db_codes, np.float64)
  q_labels = np.asarray(query_labels, np.float64)
  db_labels = np.asarray(db_labels, np.float64)
  num_q, bits = q_codes.shape
  total = 0.0
  for i in range(num_q):
    relevant = q_labels[i] @ db_labels.T > 0
    num_relevant = int(relevant.sum())
    if num_relevant == 0:
      continue
    dist = np.rint(0.5 * (bits - q_codes[i] @ db_codes.T)).astype(np.int64)
    sizes = np.bincount(dist, minlength=bits + 1)
    rels = np.bincount(dist, weights=relevant, minlength=bits + 1)
    ap, o, h = 0.0, 0, 0
    for n, r in zip(sizes, rels):
      if r:
        t = np.arange(1, n + 1)
        ahead = (t - 1) * (r - 1) / (n - 1) if n > 1 else 0.0
        ap += r / n * np.sum((h + 1 + ahead) / (o + t))
      o, h = o + n, h + r
    total += ap / num_relevant
  return total / num_q


def torch_reference_map(query_codes, db_codes, query_labels, db_labels, *, ties: str = "index",
                        device: str = "cuda") -> float:
  """mAP@all by a per-query PyTorch loop on `device`, the way the CLIP-era cross-modal hashing
  repositories evaluate on the GPU (a `calc_map_k` per query: Hamming distances by a ±1 matmul,
  an argsort, precision at the ranks of the relevant items).

  ties="index" uses `torch.argsort(stable=True)` (ties by database index; those repositories
  call an unstable sort, whose order within ties is unspecified). ties="average" is the
  tie-aware AP of `reference_tie_average_map`, one query at a time on the device in float64:
  after sorting by distance, the item at 1-based position p of a group of n items, r of them
  relevant, h relevant and o = p - t items before the group, contributes
  (r / n) · (h + 1 + (t - 1)(r - 1)/(n - 1)) / p.
  Zero-relevant queries score 0 and count in the mean.
  """
  import torch

  dev = torch.device(device)
  q_codes = torch.as_tensor(np.asarray(query_codes, np.float32), device=dev)
  db_codes = torch.as_tensor(np.asarray(db_codes, np.float32), device=dev)
  q_labels = torch.as_tensor(np.asarray(query_labels, np.float32), device=dev)
  db_labels = torch.as_tensor(np.asarray(db_labels, np.float32), device=dev)
  num_q, bits = q_codes.shape
  positions = torch.arange(1, db_codes.shape[0] + 1, device=dev, dtype=torch.float64)
  total = torch.zeros((), dtype=torch.float64, device=dev)
  for i in range(num_q):
    relevant = (q_labels[i] @ db_labels.T > 0).to(torch.float64)
    num_relevant = relevant.sum()
    if num_relevant == 0:
      continue
    dist = torch.round(0.5 * (bits - q_codes[i] @ db_codes.T)).long()
    if ties == "index":
      ranked = relevant[torch.argsort(dist, stable=True)]
      where = torch.nonzero(ranked).flatten().to(torch.float64) + 1.0
      total += torch.mean(torch.arange(1, where.numel() + 1, device=dev, dtype=torch.float64) / where)
      continue
    sizes = torch.bincount(dist, minlength=bits + 1).to(torch.float64)
    rels = torch.bincount(dist, weights=relevant, minlength=bits + 1)
    before_n = torch.cumsum(sizes, 0) - sizes
    before_rel = torch.cumsum(rels, 0) - rels
    group = torch.sort(dist).values
    n, r, h = sizes[group], rels[group], before_rel[group]
    t = positions - before_n[group]
    ahead = torch.where(n > 1, (t - 1) * (r - 1) / torch.clamp(n - 1, min=1), 0.0)
    total += torch.sum(r / n * (h + 1 + ahead) / positions) / num_relevant
  return float(total) / num_q
