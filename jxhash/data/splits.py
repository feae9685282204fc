"""Split rules: a seeded permutation, or the deterministic slice order of the DCMH code."""

from __future__ import annotations

import numpy as np

from jxhash.errors import DataError


def make_split(n: int, *, num_query: int, num_train: int, num_val: int = 0,
               num_retrieval: int | None = None, rule: str = "random", seed: int = 0,
               train_in_retrieval: bool = True) -> dict:
  """Index arrays for the query / retrieval / train / val splits of `n` items.

  Args:
    n: number of items.
    num_query: queries, disjoint from the retrieval set.
    num_train: training items. With `train_in_retrieval` (the DCMH protocol) they are the first
      `num_train` items of the retrieval set, which then holds every non-query item.
    num_val: items held out for model selection. They come from retrieval items outside the
      training set when there are enough of them (MIRFlickr: 18015 − 10000), otherwise they
      are carved from the end of the training set, which shrinks by `num_val`.
    num_retrieval: cap on the retrieval set (default: every non-query item).
    rule: "random" (a permutation seeded by `seed`) or "dcmh" (the TF/PyTorch DCMH order:
      query = [0, q), train = [q, q + t), retrieval = [q, n)).
    seed: the permutation seed (ignored by "dcmh").
    train_in_retrieval: if False, train is drawn from outside the retrieval set.

  Returns:
    dict with int64 arrays "query", "retrieval", "train", "val" and "info" (rule and seed).
  """
  if rule not in ("random", "dcmh"):
    raise DataError(f"unknown split rule {rule!r}; choose 'random' or 'dcmh'")
  if min(num_query, num_train, num_val) < 0 or num_query + num_train > n:
    raise DataError(f"split sizes query={num_query} train={num_train} val={num_val} do not fit {n} items")
  if num_retrieval is not None:
    # Slicing would otherwise shrink retrieval (or train inside it) silently.
    room = n - num_query - (0 if train_in_retrieval else num_train)
    if num_retrieval > room or (train_in_retrieval and num_retrieval < num_train):
      outside = "query set" if train_in_retrieval else "query and train sets"
      raise DataError(f"num_retrieval={num_retrieval} does not fit: {room} items are outside the {outside}"
                      + (f" and it must hold the {num_train} training items" if train_in_retrieval else ""))
  order = np.arange(n) if rule == "dcmh" else np.random.default_rng(seed).permutation(n)
  query = order[:num_query]
  rest = order[num_query:]
  if train_in_retrieval:
    retrieval = rest if num_retrieval is None else rest[:num_retrieval]
    train = retrieval[:num_train]
    spare = retrieval[num_train:]
  else:
    train = rest[:num_train]
    retrieval = rest[num_train:] if num_retrieval is None else rest[num_train:num_train + num_retrieval]
    spare = retrieval
  if num_val <= spare.size:
    val = spare[spare.size - num_val:] if num_val else spare[:0]
  else:
    if num_val >= train.size:
      raise DataError(f"num_val={num_val} leaves no training items (train={train.size})")
    val, train = train[train.size - num_val:], train[:train.size - num_val]
  info = {"rule": rule, "seed": None if rule == "dcmh" else int(seed)}
  return {"query": query, "retrieval": retrieval, "train": train, "val": val, "info": info}
