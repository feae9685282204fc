"""Flax linen encoders shared by the methods."""

from jxhash.nets.mlp import MLPEncoder, kernel_init

__all__ = ["MLPEncoder", "kernel_init"]
