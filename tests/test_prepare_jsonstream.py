"""`jsonstream.walk_object` (COCO's JSON files read an element at a time) against json.loads, in
blocks of every size, and the COCO scan on files whose lists come in another order."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from jxhash.data.prepare import cli, jsonstream
from jxhash.errors import DataError
from prepare_trees import make_coco

SMALL = ["--rule", "num_query=5", "--rule", "num_train=12", "--rule", "num_val=3", "--no-progress"]
# numbers whose prefixes are numbers too ("1." would parse as 1 if a block ended there), multi-byte text
ATOMS = (0, -0.0, 1.5e-3, -2.25e+21, 12345678901234567890, 1e100, "é ü", "\U0001F600", 'q"uote\\', "", True,
         False, None, 7)


def generate(rng: random.Random, depth: int = 0):
  r = rng.random()
  if depth > 3 or r < 0.35:
    return rng.choice(ATOMS)
  if r < 0.65:
    return [generate(rng, depth + 1) for _ in range(rng.randint(0, 4))]
  return {f"k{rng.randint(0, 5)}": generate(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def blocks(data: bytes, size: int) -> list[bytes]:
  return [data[k:k + size] for k in range(0, len(data), size)]


def walk(data: bytes, keys=("images", "annotations"), size: int = 5) -> tuple[dict, set]:
  got = {k: [] for k in keys}
  found = jsonstream.walk_object(blocks(data, size), {k: got[k].append for k in keys}, "f.json")
  return got, found


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 20])
def test_the_elements_are_json_loads_ones_in_blocks_of_any_size(size):
  rng = random.Random(size)
  for _ in range(30):
    obj = {"info": generate(rng), "images": [generate(rng) for _ in range(rng.randint(0, 12))],
           "count": rng.choice(ATOMS), "annotations": [generate(rng) for _ in range(rng.randint(0, 12))],
           "licenses": [generate(rng) for _ in range(3)], "text": "x"}
    for indent, ascii_only in ((None, True), (2, False)):
      data = json.dumps(obj, indent=indent, ensure_ascii=ascii_only).encode()
      expected = json.loads(data)
      got, found = walk(data, size=size)
      assert got == {"images": expected["images"], "annotations": expected["annotations"]}
      assert found == {"images", "annotations"}
  got, found = walk(b'{"images": {"not": "a list"}, "annotations": []}')
  assert found == {"annotations"} and got == {"images": [], "annotations": []}
  assert walk(b" {} ")[1] == set()


@pytest.mark.parametrize("data, needle", [
    (b'{"images": [1, 2', "not valid JSON"),
    (b'{"images": [1 2]}', "expected ',' or ']'"),
    (b'{"images": [1,]}', "not valid JSON"),
    (b'{"a": 1,}', "expected a key"),
    (b'{"a" 1}', "expected ':'"),
    (b'[{"images": []}]', "expected '{'"),
    (b'{"images": []} {}', "text after the object"),
    (b'{"a": tru}', "not valid JSON"),
    (b'{"a": "never closed', "not valid JSON"),
    (b'', "got the end"),
    (b'{"images": ["\xff"]}', "not UTF-8"),
    (b'{"images": [], "images": []}', "given twice"),
])
def test_bad_json_is_one_line_naming_the_file(data, needle):
  for size in (1, 4, 1 << 20):
    with pytest.raises(DataError) as e:
      walk(data, size=size)
    message = str(e.value)
    assert message.startswith("f.json: ") and "\n" not in message and needle in message, message


def test_a_value_that_never_ends_is_refused_without_reading_the_rest(monkeypatch):
  monkeypatch.setattr(jsonstream, "MAX_VALUE", 1000)
  read = []

  def chunks():
    yield b'{"images": ["'
    for k in range(10000):
      read.append(k)
      yield b"x" * 100

  with pytest.raises(DataError, match="a value longer than"):
    jsonstream.walk_object(chunks(), {"images": lambda e: None}, "f.json")
  assert len(read) < 100


def test_coco_lists_in_another_order_and_indented_give_the_same_items(tmp_path):
  def prepare(raw, out):
    assert cli.main(["coco", "--raw", str(raw), "--out", str(out), *SMALL]) == 0
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir() if p.name != "manifest.json"}

  official = prepare(make_coco(tmp_path / "a"), tmp_path / "out-a")
  raw = make_coco(tmp_path / "b")
  for name in ("instances_train2017.json", "captions_val2017.json"):
    path = raw / "annotations" / name
    content = json.loads(path.read_text())
    path.write_text(json.dumps(dict(reversed(list(content.items()))), indent=1))  # annotations before images
  assert prepare(raw, tmp_path / "out-b") == official
