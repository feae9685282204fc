"""docs/data.md's list of each dataset's files states the sizes of the copies the tests read."""

from __future__ import annotations

import pathlib
import re

import pytest

from conftest import shared_path

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "data.md"


def _section() -> str:
  text = DOC.read_text(encoding="utf-8")
  start = text.index("## Each dataset's files")
  return text[start:text.index("\n## ", start + 1)]


def _stated_sizes() -> dict[str, tuple[str, int]]:
  """{file name: (dataset, bytes)} from the table rows whose size is given in bytes."""
  sizes, dataset = {}, None
  for line in _section().splitlines():
    heading = re.match(r"\*\*`(\w+)`\*\*", line)
    if heading:
      dataset = heading.group(1)
    row = re.match(r"\| `([^`]+)`[^|]* \|.*\| ([\d,]+) bytes \|", line)
    if row:
      sizes[row.group(1)] = (dataset, int(row.group(2).replace(",", "")))
  return sizes


def test_every_byte_size_in_the_doc_is_the_shared_files_size():
  sizes = _stated_sizes()
  assert len(sizes) == 6, sizes  # Wikipedia's four files and MIRFlickr's two
  for name, (dataset, size) in sizes.items():
    assert shared_path(dataset, name).stat().st_size == size, name


@pytest.mark.parametrize("dataset", ["wikipedia", "mirflickr25k"])
def test_every_shared_data_file_a_loader_reads_is_listed(dataset):
  listed = {name for name, (d, _) in _stated_sizes().items() if d == dataset}
  # The extra copies next to the ones the loader reads are described in SOURCE.md, not here.
  extra = {"SOURCE.md", "wikiData_multilabelfmt.mat", "wiki_roph.mat"}
  on_disk = {p.name for p in shared_path(dataset).iterdir()} - extra
  assert on_disk == listed
