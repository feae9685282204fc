"""Exact Hamming search over ±1 codes: `HashIndex`, its engines, its files.

    from jxhash.index import HashIndex
    index = HashIndex(64, metadata={"method": "dcmh"})
    index.add(db_codes)                                   # (N, 64) ±1, ids 0..N-1
    ids, dist = index.search(query_codes, k=100)          # exact, ties in insertion order
    ids, dist = index.search(query_codes, k=10, engine="mih")   # same answer, sublinear
    index.save("db.npz"); HashIndex.load("db.npz")
    index.save("db.faissindex", format="faiss")           # faiss.read_index_binary reads it

Modules, one job each:
  flat      HashIndex: storage, code validation, engine dispatch
  ids       id validation and uniqueness (IdSet)
  _scan     the compiled exhaustive scan (flat engine): top-k, radius
  mih       multi-index hashing tables and search (mih engine)
  persist   the .npz file format; defensive loading of untrusted files
  faiss_io  FAISS's binary index file format (no faiss needed) and the faiss engine
"""

from __future__ import annotations

from jxhash.index.flat import ENGINES, HashIndex

__all__ = ["ENGINES", "HashIndex"]
