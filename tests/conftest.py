"""Test configuration: strict JAX promotion, CPU only, and access to ../shared/data."""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

SHARED_DATA = pathlib.Path(os.environ.get("JXHASH_SHARED_DATA", pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


def shared_path(*parts) -> pathlib.Path:
  """A file under ../shared/data: skip the test if absent, fail if JXHASH_REQUIRE_SHARED_DATA=1."""
  path = SHARED_DATA.joinpath(*parts)
  if not path.exists():
    message = f"shared data file {path} is missing"
    if os.environ.get("JXHASH_REQUIRE_SHARED_DATA") == "1":
      pytest.fail(message + " (JXHASH_REQUIRE_SHARED_DATA=1)")
    pytest.skip(message)
  return path


@pytest.fixture
def wikipedia_dir():
  return shared_path("wikipedia")


@pytest.fixture
def mirflickr_dir():
  return shared_path("mirflickr25k")
