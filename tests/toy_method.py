"""A toy 7th method, to show (and test) that a method is one small file plus one registry line.

Two linear hash layers (image, text), each trained on its batch against the other modality's
buffer with DCMH's objective, B = sign(F + G) each epoch. `tests/test_methods.py` registers it
as "toy" and runs every registry-wide test on it.
"""

from __future__ import annotations

import dataclasses

import jax

from jxhash import losses
from jxhash.methods import toolkit
from jxhash.spec import MODALITIES, BaseConfig, Dims, MethodSpec, Phase, Stage


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
  epochs: int = 20
  lr: float = 0.05
  lr_end: float = 0.05
  lr_schedule: str = "constant"
  image_hidden: tuple = ()  # no hidden layer: a linear hash
  text_hidden: tuple = ()
  init: str = "fan_in"


def init(key: jax.Array, config: Config, dims: Dims, num_train: int) -> toolkit.BufferedState:
  keys = toolkit.split_keys(key, MODALITIES + ("buffers",))
  tx = toolkit.sgd(toolkit.config_schedule(config, num_train))
  nets = toolkit.network_states(keys, toolkit.feature_mlps(config, tanh=True), dims, tx)
  outputs = toolkit.random_buffers(keys["buffers"], MODALITIES, num_train=num_train, bits=config.bits)
  return toolkit.BufferedState(nets=nets, outputs=outputs, codes=toolkit.sign_of_sum(*outputs.values()))


def _objective(modality: str):
  other = "text" if modality == "image" else "image"

  def loss(out, extras, state, batch, similarity):
    del extras
    return losses.dcmh_objective(out, other=state.outputs[other], similarity=similarity,
                                 codes=state.codes[batch["index"]], buffer=state.outputs[modality],
                                 index=batch["index"], gamma=1.0, eta=1.0), {}

  return loss


def stages(config: Config, num_train: int) -> tuple[Stage, ...]:
  phases = tuple(Phase(m, toolkit.network_step(m, _objective(m), context=toolkit.label_context), config.batch_size)
                 for m in MODALITIES)
  return (Stage("train", config.epochs, phases, end_of_epoch=toolkit.refresh_codes()),)


SPEC = MethodSpec(name="toy", Config=Config, init=init, stages=stages, encode=toolkit.encode,
                  fidelity="a test fixture, not a published method", reference="none",
                  smoke={"epochs": 2, "batch_size": 32})
