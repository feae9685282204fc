"""Bad input to the library API and to experiments/index.py (issue 29, items 2-4).

Two tables, in the style of test_bad_inputs.py:
  API_CASES  a call -> the exception type (`UserError` or `DataError`), one line naming the
             argument, option, file or value at fault; never a TypeError from pathlib or numpy.
  CLI_CASES  an index.py command line -> exit code 2, one line on stderr starting "error: "
             and naming the flag/file at fault, and no file outside the command's own output
             created, changed or removed: a tree of "victim" files (a results file, a
             checkpoint's run.json, files behind symbolic links, a 3 GB sparse file) is
             checksummed, link targets included, before and after.
"""

import hashlib
import json
import os
import pathlib
import shutil
import sys
import tracemalloc

import numpy as np
import pytest

from jxhash import checkpoint, data, fileio
from jxhash.data.core import RowSource
from jxhash.errors import DataError, UserError
from jxhash.index import HashIndex
from test_bad_inputs import trained  # noqa: F401  (the module fixture: a tiny finished run)

from jxhash.commands import index as index_cli

ROOT = pathlib.Path(__file__).resolve().parents[1]

IMAGE_DIM, TEXT_DIM = 128, 64  # the synthetic dataset's widths, which the `trained` run encodes


def tree_state(*roots) -> dict:
  """{path: state} of every file and symbolic link under `roots`, and of every link's target
  wherever it lies: a sha256 for files up to 16 MB, (size, mtime_ns, inode) above that (a 3 GB
  sparse victim is not read to be watched)."""
  out = {}

  def state(p: pathlib.Path):
    stat = p.stat()
    if stat.st_size > 16 << 20:
      return ("large", stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return ("file", hashlib.sha256(p.read_bytes()).hexdigest())

  for root in roots:
    for folder, dirs, files in os.walk(root):
      for name in dirs + files:
        p = pathlib.Path(folder) / name
        if p.is_symlink():
          target = pathlib.Path(os.path.realpath(p))
          out[str(p)] = ("link", os.readlink(p))
          out[f"{p} -> {target}"] = state(target) if target.is_file() else None
        elif p.is_file():
          out[str(p)] = state(p)
  return out


class Rows(RowSource):
  """An in-memory array behind the lazy row-source protocol (reads happen chunk by chunk)."""

  def __init__(self, array):
    self.array = array
    self.shape, self.dtype = array.shape, array.dtype

  def _read_sorted(self, rows):
    return self.array[rows]


def nested(levels: int) -> dict:
  out = {}
  for _ in range(levels - 1):
    out = {"a": out}
  return out


# --------------------------------------------------------------------------- the library API
# name -> build(tmp, encoder) -> (call, exception type, [strings the message names])


def a_load_data_dir_int(tmp, enc):
  return lambda: data.load("wikipedia", 123), DataError, ["data_dir of dataset 'wikipedia'", "int 123"]


def a_load_data_dir_bytes(tmp, enc):
  return lambda: data.load("wikipedia", bytes(tmp)), DataError, ["data_dir", "bytes"]


def a_load_name_not_str(tmp, enc):
  return lambda: data.load(["wikipedia"]), DataError, ["unknown dataset ['wikipedia']"]


def a_loader_data_dir_int(tmp, enc):
  return lambda: data.load_iapr(7, split="random", seed=0), DataError, ["data_dir of dataset 'iapr'", "int 7"]


def a_read_matrix_path_int(tmp, enc):
  from jxhash.data import io
  return lambda: io.read_matrix(5), DataError, ["data file path", "int 5"]


def a_restore_none(tmp, enc):
  return lambda: checkpoint.restore(None), UserError, ["checkpoint path", "NoneType None"]


def a_restore_int(tmp, enc):
  return lambda: checkpoint.restore(123), UserError, ["checkpoint path", "int 123"]


def a_restore_bytes(tmp, enc):
  return lambda: checkpoint.restore(os.fsencode(tmp)), UserError, ["checkpoint path", "bytes"]


def a_encode_empty(tmp, enc):
  return lambda: enc.encode("text", np.zeros((0, TEXT_DIM))), UserError, ["x (text inputs)", "no rows"]


def a_encode_object(tmp, enc):
  x = np.empty((2, TEXT_DIM), dtype=object)
  x[:] = 1.0
  return lambda: enc.encode("text", x), UserError, ["x (text inputs)", "object"]


def a_encode_strings(tmp, enc):
  return lambda: enc.encode("text", np.full((2, TEXT_DIM), "a")), UserError, ["x (text inputs)", "<U1"]


def a_encode_ragged(tmp, enc):
  return (lambda: enc.encode("text", [[0.0] * TEXT_DIM, [0.0] * (TEXT_DIM - 1)]), UserError,
          ["x (text inputs)", "not a rectangular array"])


def a_encode_wrong_width(tmp, enc):
  return (lambda: enc.encode("image", np.zeros((3, IMAGE_DIM + 1), np.float32)), UserError,
          ["x (image inputs)", f"(3, {IMAGE_DIM + 1})", f"expected (N, {IMAGE_DIM})"])


def a_encode_wrong_rank(tmp, enc):
  return lambda: enc.encode("text", np.zeros(TEXT_DIM)), UserError, ["x (text inputs)", f"({TEXT_DIM},)"]


def a_encode_complex(tmp, enc):
  return lambda: enc.encode("text", np.zeros((2, TEXT_DIM), complex)), UserError, ["x (text inputs)", "complex128"]


def a_encode_none(tmp, enc):
  return lambda: enc.encode("text", None), UserError, ["x (text inputs)", "NoneType"]


def a_encode_nan(tmp, enc):
  x = np.zeros((5, TEXT_DIM), np.float32)
  x[2, 7] = np.nan
  return lambda: enc.encode("text", x), UserError, ["x (text inputs)", "NaN or inf", "row 2, column 7"]


def a_encode_inf(tmp, enc):
  x = np.zeros((5, IMAGE_DIM))
  x[4, 0] = -np.inf
  return lambda: enc.encode("image", x), UserError, ["x (image inputs)", "NaN or inf", "row 4, column 0"]


def a_encode_nan_in_a_lazy_source(tmp, enc):
  x = np.zeros((10, TEXT_DIM), np.float32)
  x[9, 3] = np.nan
  return (lambda: enc.encode("text", Rows(x), chunk=4), UserError,
          ["x (text inputs)", "rows 8..9", "row 9, column 3"])


def a_encode_modality(tmp, enc):
  return lambda: enc.encode("audio", np.zeros((2, TEXT_DIM))), UserError, ["modality", "'audio'"]


def a_encode_chunk(tmp, enc):
  return lambda: enc.encode("text", np.zeros((2, TEXT_DIM)), chunk=0), UserError, ["chunk", "0"]


def a_index_save_nested_metadata(tmp, enc):
  index = HashIndex(8, metadata=nested(64))
  index.add(np.ones((2, 8)))
  return lambda: index.save(tmp / "deep.npz"), UserError, ["HashIndex metadata", "nested 64 levels", "at most 63"]


def a_index_save_huge_metadata(tmp, enc):
  index = HashIndex(8, metadata={"notes": "x" * (1 << 20)})
  return lambda: index.save(tmp / "huge.npz"), UserError, ["HashIndex metadata", "1,048,", "keep large data out"]


def a_index_save_path_int(tmp, enc):
  return lambda: HashIndex(8).save(5), UserError, ["HashIndex path", "int 5"]


def a_index_load_path_none(tmp, enc):
  return lambda: HashIndex.load(None), UserError, ["HashIndex path", "NoneType"]


def a_index_save_through_a_link(tmp, enc):
  (tmp / "theirs.txt").write_text("someone else's file")
  (tmp / "link.npz").symlink_to(tmp / "theirs.txt")
  return lambda: HashIndex(8).save(tmp / "link.npz"), UserError, ["HashIndex file", "link.npz is a symbolic link"]


def a_index_save_faiss_through_a_link(tmp, enc):
  (tmp / "link.faissindex").symlink_to(tmp / "nowhere")
  return (lambda: HashIndex(8).save(tmp / "link.faissindex", format="faiss"), UserError,
          ["FAISS index file", "link.faissindex is a symbolic link"])


def a_path_component_parent(tmp, enc):
  return lambda: fileio.check_path_component("..", "--name"), UserError, ["--name '..'", "cannot be a file name"]


def a_path_component_climbs(tmp, enc):
  return lambda: fileio.check_path_component("a/../b", "--name"), UserError, ["--name 'a/../b'"]


def a_path_component_absolute(tmp, enc):
  return lambda: fileio.check_path_component("/etc", "name"), UserError, ["name '/etc'"]


def a_path_component_backslash(tmp, enc):
  return lambda: fileio.check_path_component("a\\b", "name"), UserError, ["name 'a\\\\b'"]


def a_path_component_newline(tmp, enc):
  return lambda: fileio.check_path_component("run\n", "name"), UserError, ["name 'run\\n'"]


def a_path_component_nul(tmp, enc):
  return lambda: fileio.check_path_component("a\x00b", "name"), UserError, ["name 'a\\x00b'"]


def a_path_component_long(tmp, enc):
  return lambda: fileio.check_path_component("a" * 101, "name"), UserError, ["name 'aaaa", "1 to 100 characters"]


def a_path_component_empty(tmp, enc):
  return lambda: fileio.check_path_component("", "name"), UserError, ["name ''"]


def a_path_component_not_str(tmp, enc):
  return lambda: fileio.check_path_component(b"x", "name"), UserError, ["name must be a str", "bytes"]


def a_run_name_trailing_newline(tmp, enc):
  from jxhash.runs.identity import check_run_name
  return lambda: check_run_name("mine\n"), UserError, ["--name 'mine\\n'"]


API_CASES = {name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("a_")}


@pytest.fixture(scope="module")
def encoder(trained):  # noqa: F811
  run_dir, ds = trained
  assert ds.image.shape[1] == IMAGE_DIM and ds.text.shape[1] == TEXT_DIM
  return checkpoint.restore(run_dir)


@pytest.mark.slow  # the module fixture trains a tiny run
@pytest.mark.parametrize("case", sorted(API_CASES))
def test_api_bad_input(case, encoder, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  call, kind, names = API_CASES[case](tmp_path, encoder)
  before = tree_state(tmp_path)
  with pytest.raises(UserError) as info:
    call()
  message = str(info.value)
  assert isinstance(info.value, kind), (type(info.value), message)
  assert "\n" not in message and message.strip() == message, message
  for name in names:
    assert name in message, f"{name!r} not in {message!r}"
  assert tree_state(tmp_path) == before


def test_the_api_table_is_large_enough():
  assert len(API_CASES) >= 30


@pytest.mark.slow  # the module fixture trains a tiny run
def test_what_encode_accepts(encoder, trained):  # noqa: F811
  """The checks refuse what is wrong, not what is unusual: a list of lists, ints, float64, a lazy
  source and a JAX array encode to the same codes as the float32 array."""
  import jax.numpy as jnp
  _, ds = trained
  x = np.asarray(ds.text[:6], np.float32)
  codes = encoder.encode("text", x)
  assert codes.shape == (6, encoder.bits) and set(np.unique(codes)) <= {-1, 1}
  for other in (x.tolist(), x.astype(np.float64), Rows(x), jnp.asarray(x)):
    np.testing.assert_array_equal(encoder.encode("text", other, chunk=4), codes)
  whole = np.round(x).astype(np.int64)
  np.testing.assert_array_equal(encoder.encode("text", whole), encoder.encode("text", whole.astype(np.float32)))


def test_what_a_path_component_may_be():
  for name in ("wikipedia", "my-run_2.v1", "données", "a" * 100, "a.b", "-x"):
    assert fileio.check_path_component(name, "name") == name


def test_index_metadata_at_the_limit_round_trips(tmp_path):
  index = HashIndex(8, metadata=nested(63))
  index.add(np.ones((2, 8)))
  index.save(tmp_path / "i.npz")
  assert HashIndex.load(tmp_path / "i.npz").metadata == nested(63)


# --------------------------------------------------------------------------- experiments/index.py


def _victims(tmp: pathlib.Path, run_dir: pathlib.Path) -> dict:
  """Files a command must not touch, in the test's folder: {name: path}."""
  v = tmp / "victims"
  v.mkdir()
  (v / "results.json").write_text(json.dumps({"method": "dcmh", "metrics": {"i2t": {"map": 0.5}}}))
  (v / "precious.txt").write_text("keep me")
  (v / "ck").mkdir()
  shutil.copy(run_dir / "run.json", v / "ck" / "run.json")
  (v / "link.npz").symlink_to(v / "precious.txt")
  (v / "dangling.npz").symlink_to(v / "nowhere.txt")
  with open(v / "sparse.bin", "wb") as f:  # 3 GB that take no disk space
    f.truncate(3 << 30)
  rng = np.random.default_rng(0)
  text = rng.normal(size=(20, TEXT_DIM)).astype(np.float32)
  np.save(v / "text.npy", text)
  bad = text.copy()
  bad[11, 5] = np.nan
  np.save(v / "nan.npy", bad)
  bad = text.copy()
  bad[3, 0] = np.inf
  np.save(v / "inf.npy", bad)
  np.save(v / "wide.npy", rng.normal(size=(20, TEXT_DIM + 3)))
  np.save(v / "zero_width.npy", np.zeros((20, 0)))
  index = HashIndex(16)
  index.add(np.where(rng.normal(size=(5, 16)) > 0, 1, -1))
  index.save(v / "index.npz")
  return {p.name: p for p in v.rglob("*")}


def _build(v, run_dir, features="text.npy", out="{t}/new.npz", *extra):
  return ["build", "--checkpoint", str(run_dir), "--features", str(v / features), "--modality", "text",
          "--out", out, *extra]


CLI_CASES = [
    # case id, argv from (victims dir, run dir), text the one-line message must contain
    ("build_out_results_file", lambda v, r: _build(v, r, out=str(v / "results.json")),
     "--out {v}/results.json already exists; pass --overwrite to replace it"),
    ("build_out_run_json", lambda v, r: _build(v, r, out=str(v / "ck" / "run.json")),
     "--out {v}/ck/run.json already exists"),
    ("build_out_sparse_3gb", lambda v, r: _build(v, r, out=str(v / "sparse.bin")),
     "--out {v}/sparse.bin already exists"),
    ("build_out_symlink", lambda v, r: _build(v, r, "text.npy", str(v / "link.npz"), "--overwrite"),
     "--out {v}/link.npz is a symbolic link"),
    ("build_out_dangling_symlink", lambda v, r: _build(v, r, out=str(v / "dangling.npz")),
     "--out {v}/dangling.npz is a symbolic link"),
    ("convert_out_existing", lambda v, r: ["convert", "--index", str(v / "index.npz"), "--out",
                                           str(v / "precious.txt"), "--format", "jxhash"],
     "--out {v}/precious.txt already exists"),
    ("convert_out_symlink", lambda v, r: ["convert", "--index", str(v / "index.npz"), "--out", str(v / "link.npz"),
                                          "--format", "faiss", "--overwrite"],
     "--out {v}/link.npz is a symbolic link"),
    ("build_features_nan", lambda v, r: _build(v, r, "nan.npy"),
     "--features file {v}/nan.npy has NaN or inf values (1 in rows 0..19; first at row 11, column 5)"),
    ("build_features_inf", lambda v, r: _build(v, r, "inf.npy"), "--features file {v}/inf.npy has NaN or inf"),
    ("build_features_wide", lambda v, r: _build(v, r, "wide.npy"),
     f"--features file {{v}}/wide.npy holds features of width {TEXT_DIM + 3}; the checkpoint encodes text inputs "
     f"of shape (N, {TEXT_DIM})"),
    ("build_features_zero_width", lambda v, r: _build(v, r, "zero_width.npy"),
     "zero_width.npy holds features of width 0"),
    ("search_features_nan", lambda v, r: ["search", "--index", str(v / "index.npz"), "--checkpoint", str(r),
                                          "--features", str(v / "nan.npy"), "--modality", "text"],
     "--features file {v}/nan.npy has NaN or inf values"),
]


@pytest.mark.slow  # the module fixture trains a tiny run
@pytest.mark.parametrize("case, argv, message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_index_cli_bad_input(case, argv, message, trained, tmp_path, capsys):  # noqa: F811
  run_dir, _ = trained
  victims = _victims(tmp_path, run_dir)
  v = victims["results.json"].parent
  args = [a.replace("{t}", str(tmp_path)) for a in argv(v, run_dir)]
  before = tree_state(tmp_path, run_dir)
  tracemalloc.start()
  try:
    code = index_cli.main(args)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  err = capsys.readouterr().err.strip()
  assert code == 2, err
  assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
  assert message.replace("{v}", str(v)) in err, err
  assert tree_state(tmp_path, run_dir) == before
  assert not (tmp_path / "new.npz").exists()
  assert peak < 64 << 20, f"{peak >> 20} MiB allocated"  # the 3 GB victim is never read


def test_the_cli_table_is_large_enough():
  assert len(CLI_CASES) >= 12


@pytest.mark.slow  # the module fixture trains a tiny run
def test_overwrite_replaces_an_existing_output_and_nothing_else(trained, tmp_path, capsys):  # noqa: F811
  run_dir, _ = trained
  victims = _victims(tmp_path, run_dir)
  v = victims["results.json"].parent
  assert index_cli.main(_build(v, run_dir, out=str(tmp_path / "db.npz"))) == 0
  first = HashIndex.load(tmp_path / "db.npz")
  assert len(first) == 20
  before = tree_state(v, run_dir)
  assert index_cli.main(_build(v, run_dir, out=str(tmp_path / "db.npz"))) == 2
  assert "already exists" in capsys.readouterr().err
  (tmp_path / "db.npz").write_text("an older file")
  assert index_cli.main(_build(v, run_dir, "text.npy", str(tmp_path / "db.npz"), "--overwrite")) == 0
  np.testing.assert_array_equal(HashIndex.load(tmp_path / "db.npz").packed_codes, first.packed_codes)
  assert tree_state(v, run_dir) == before
  assert not [p for p in tmp_path.iterdir() if p.name.endswith(".jxhash-tmp")]


@pytest.mark.slow  # the module fixture trains a tiny run
def test_a_wrong_width_features_file_is_refused_before_it_is_read(trained, tmp_path, monkeypatch, capsys):  # noqa: F811
  run_dir, _ = trained
  np.savez_compressed(tmp_path / "wide.npz", X=np.zeros((20000, 500)))  # 76 MiB declared, ~80 KB stored

  def forbidden(*args, **kwargs):
    raise AssertionError("the features were read before their width was checked")

  monkeypatch.setattr(np.lib.format, "read_array", forbidden)
  tracemalloc.start()
  try:
    code = index_cli.main(["build", "--checkpoint", str(run_dir), "--features", f"{tmp_path / 'wide.npz'}:X",
                           "--modality", "text", "--out", str(tmp_path / "o.npz")])
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert code == 2
  assert "holds features of width 500" in capsys.readouterr().err
  assert peak < 32 << 20
