"""Test configuration: strict JAX promotion, CPU only, quick compiles, and access to ../shared/data.

Rank promotion raises everywhere (a (n,) + (n, 1) broadcast is almost always a bug). Strict dtype
promotion (no implicit int -> float or bfloat16 -> float32 promotion between arrays) is the
`strict_promotion` fixture, used by the modules of pure functions (losses, metrics, evaluation,
networks): training cannot run under it, because optax's Adam raises a Python float to the
power of its int32 step count. Warnings are errors (pyproject.toml's filterwarnings), except the
third-party ones listed there with a reason.
"""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Test programs are tiny, so on a CPU their time goes to compiling them: LLVM's backend
# optimisations cost more than they save (tests/test_mmach.py's quick tests: 64 s -> 35 s).
# Codes stay bit-identical to the recorded fingerprints (tests/test_fingerprint.py passes under
# it). Subprocesses started by the tests inherit the flag.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# The tiny synthetic split that most training tests use (300 items: 40 queries, 96 training, 24 val),
# as loader options and as the command-line flags that give them.
TINY_SPLIT = {"num_items": 300, "num_query": 40, "num_train": 96, "num_val": 24}
TINY_SPLIT_FLAGS = [flag for key, value in TINY_SPLIT.items() for flag in ("--data-option", f"{key}={value}")]

SHARED_DATA = pathlib.Path(os.environ.get("JXHASH_SHARED_DATA", pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


def load_script(path: pathlib.Path):
  """A script of experiments/ or benchmarks/ as a module, loaded from its file (scripts are not a
  package, and the tests never add their folders to the import path)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def shared_path(*parts) -> pathlib.Path:
  """A file under ../shared/data: skip the test if absent, fail if JXHASH_REQUIRE_SHARED_DATA=1."""
  path = SHARED_DATA.joinpath(*parts)
  if not path.exists():
    message = f"shared data file {path} is missing"
    if os.environ.get("JXHASH_REQUIRE_SHARED_DATA") == "1":
      pytest.fail(message + " (JXHASH_REQUIRE_SHARED_DATA=1)")
    pytest.skip(message)
  return path


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
  """Every test runs in its own temporary directory: a command's default work directory (the
  current one) then never lies in the checkout, where its results, checkpoints and logs would
  land, and parallel test workers never share one."""
  monkeypatch.chdir(tmp_path)


@pytest.fixture
def wikipedia_dir():
  return shared_path("wikipedia")


@pytest.fixture
def mirflickr_dir():
  return shared_path("mirflickr25k")


@pytest.fixture(scope="session")
def tiny_data():
  """The synthetic dataset of `TINY_SPLIT` (read-only: shared by the tests of a session)."""
  from jxhash import data
  return data.load("synthetic", **TINY_SPLIT)


@pytest.fixture
def strict_promotion():
  """Run the test with jax_numpy_dtype_promotion="strict"."""
  with jax.numpy_dtype_promotion("strict"):
    yield


def pytest_collection_modifyitems(items):
  """Tests that read ../shared/data are real-data tests: part of the slow tier."""
  for item in items:
    if {"wikipedia_dir", "mirflickr_dir"} & set(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.slow)
