"""The evaluation's wiring, checked with a fake encoder whose codes are chosen by hand:
which modality queries which database, and which items each protocol ranks."""

import itertools

import flax.struct
import numpy as np
import pytest

from jxhash import metrics
from jxhash.training import evaluation
from jxhash.data import CrossModalData
from jxhash.spec import MethodSpec

pytestmark = pytest.mark.usefixtures("strict_promotion")


@flax.struct.dataclass
class _Table:
  """A fake model: one fixed 4-bit code per item, looked up by the item's id (first feature)."""

  image: np.ndarray
  text: np.ndarray


def _fake_encode(state, modality, x):
  table = state.image if modality == "image" else state.text
  return table[x[:, 0].astype(np.int32)]


FAKE = MethodSpec(name="fake", Config=object, init=None, stages=None, encode=_fake_encode, fidelity="", reference="")
IDENTITY = {m: {"mean": np.zeros(1, np.float32), "scale": np.ones(1, np.float32)} for m in ("image", "text")}


def _dataset(val=()):
  n = 6
  ids = np.arange(n, dtype=np.float32)[:, None]
  labels = np.eye(3, dtype=np.uint8)[[0, 1, 0, 1, 2, 2]]
  return CrossModalData(image=ids, text=ids.copy(), labels=labels, query=np.array([0, 1]),
                        retrieval=np.array([2, 3, 4, 5]), train=np.array([2, 3, 4]) if val else np.array([2, 3, 4, 5]),
                        val=np.asarray(val, np.int64), name="wiring")


def test_i2t_ranks_the_text_database_for_image_queries():
  # image codes: query 0 sits on item 2's TEXT code, query 1 on item 5's text code; the image
  # codes of the database items are far from everything, so only the text database can match
  text = np.array([[1, 1, 1, 1], [-1, -1, -1, -1], [1, 1, 1, -1], [-1, 1, -1, 1], [1, -1, 1, -1],
                   [-1, -1, 1, 1]], np.float32)
  image = np.array([[1, 1, 1, -1], [-1, -1, 1, 1], [-1, -1, -1, -1], [-1, -1, -1, -1], [-1, -1, -1, -1],
                    [-1, -1, -1, -1]], np.float32)
  result = evaluation.evaluate(FAKE, _Table(image, text), _dataset(), IDENTITY)
  # query 0 (label 0): text ranking 2 (d=0, relevant), 4 (d=2), 3, 5 -> AP 1
  # query 1 (label 1): text ranking 5 (d=0, label 2), then 3 (d=2, label 1) and 4 (d=2): relevant 3 at rank 2
  assert result["i2t"]["map"] == pytest.approx((1.0 + 0.5) / 2)
  # t2i: text queries 0 and 1 against the image database, where items 2..5 all share one code
  # (a tie in index order): query 0 relevant item 2 at rank 1; query 1 relevant item 3 at rank 2
  assert result["t2i"]["map"] == pytest.approx((1.0 + 0.5) / 2)


def test_val_protocol_ranks_val_items_against_the_retrieval_set_without_them():
  codes = np.array([[1, 1, 1, 1]] * 6, np.float32)
  codes[5] = [-1, -1, -1, -1]  # item 5 (val) is far from its own duplicate-free database
  ds = _dataset(val=[5])
  result = evaluation.evaluate(FAKE, _Table(codes, codes.copy()), ds, IDENTITY, queries="val")
  # val query 5 (label 2) against {2, 3, 4}: all at distance 4, index order: relevant item 4 at rank 3
  for direction in ("i2t", "t2i"):
    assert result[direction]["num_queries"] == 1
    assert result[direction]["map"] == pytest.approx(1 / 3)
  # had item 5 stayed in its own database it would have ranked itself first (AP 1)


def test_chance_map_is_the_mean_ap_over_all_orders():
  rng = np.random.default_rng(3)
  ql = (rng.random((4, 3)) < 0.5).astype(np.uint8)
  dl = (rng.random((6, 3)) < 0.4).astype(np.uint8)
  relevant = (ql.astype(int) @ dl.T.astype(int)) > 0
  total = []
  for order in itertools.permutations(range(6)):
    rel = relevant[:, list(order)]
    aps = []
    for row in rel:
      hits = np.flatnonzero(row)
      aps.append(np.mean(np.arange(1, hits.size + 1) / (hits + 1)) if hits.size else 0.0)
    total.append(np.mean(aps))
  assert metrics.chance_map(ql, dl) == pytest.approx(np.mean(total), abs=1e-12)
