"""Image augmentation on device: random horizontal flips and translations of pixel batches.

The deep hashing papers reimplemented here train without augmentation (DCMH, and the others'
released code); it is an option for users who train CNNs on pixels (`TrainOptions.augment`).
It runs inside the jitted training step, on the device, from the step's PRNG key: no host
work, and a resumed run draws the same augmentations as an uninterrupted one.

Spec strings: "none", "flip", "shift:P" (translate by up to P pixels each way, the uncovered
border filled by edge replication) and "flip+shift:P".
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jxhash.errors import UserError


@dataclasses.dataclass(frozen=True)
class Augment:
  """What to apply: flip (mirror left-right with probability 1/2) and shift (max pixels)."""

  flip: bool = False
  shift: int = 0

  @property
  def active(self) -> bool:
    return self.flip or self.shift > 0


def parse(spec: str) -> Augment:
  """An `Augment` from a spec string (module docstring); UserError naming a bad part."""
  if spec in ("", "none"):
    return Augment()
  flip, shift = False, 0
  for part in spec.split("+"):
    name, _, value = part.partition(":")
    if name == "flip" and not value:
      flip = True
    elif name == "shift" and value.isdigit() and int(value) > 0:
      shift = int(value)
    else:
      raise UserError(f"augment {spec!r}: cannot read {part!r}; use none, flip, shift:PIXELS or flip+shift:PIXELS")
  return Augment(flip=flip, shift=shift)


def augment_images(key: jax.Array, images: jax.Array, aug: Augment) -> jax.Array:
  """Randomly flipped and/or translated copies of a pixel batch.

  Args:
    key: PRNG key.
    images: (B, H, W, C) images, any dtype (uint8 pixels stay uint8).
    aug: what to apply.

  Returns:
    (B, H, W, C) same dtype; each image gets its own draw.
  """
  if images.ndim != 4:
    raise UserError(f"augmentation applies to (batch, height, width, channels) images, got shape {images.shape}")
  if not aug.active:
    return images
  flip_key, shift_key = jax.random.split(key)
  batch, height, width, _ = images.shape
  if aug.flip:
    mirrored = jax.random.bernoulli(flip_key, 0.5, (batch,))
    images = jnp.where(mirrored[:, None, None, None], images[:, :, ::-1], images)
  if aug.shift:
    p = aug.shift
    offsets = jax.random.randint(shift_key, (batch, 2), 0, 2 * p + 1)
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")

    def crop(image, offset):
      return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))

    images = jax.vmap(crop)(padded, offsets)
  return images


__all__ = ["Augment", "augment_images", "parse"]
