"""The method registry: one module per method, listed once here.

The contract a method fulfils (`MethodSpec`, `Stage`, `Phase`, `BaseConfig`) lives in
`jxhash.spec`, which the trainer imports instead of this package; the shared plumbing methods
compose lives in `jxhash.methods.toolkit`.
"""

from __future__ import annotations

from jxhash.errors import UserError
from jxhash.methods import dcmh
from jxhash.methods import dcph
from jxhash.methods import hsidhn
from jxhash.methods import mdch
from jxhash.methods import mmach
from jxhash.methods import uchm
from jxhash.spec import BaseConfig, MethodSpec, Phase, Stage

METHODS: dict[str, MethodSpec] = {
    "dcmh": dcmh.SPEC,
    "dcph": dcph.SPEC,
    "hsidhn": hsidhn.SPEC,
    "mdch": mdch.SPEC,
    "mmach": mmach.SPEC,
    "uchm": uchm.SPEC,
}


def get_method(name: str) -> MethodSpec:
  """The registered method `name`; an unknown name raises an error listing the valid ones."""
  if name not in METHODS:
    raise UserError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
  return METHODS[name]


__all__ = ["BaseConfig", "METHODS", "MethodSpec", "Phase", "Stage", "get_method"]
