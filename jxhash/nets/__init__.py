"""Flax linen encoders shared by the methods (pure `init` / `apply`)."""

from jxhash.nets.attention import ModalityEnhancedAttention
from jxhash.nets.cnnf import CNNF, load_vgg_f, local_response_norm, preprocess
from jxhash.nets.mask import MaskedMLPEncoder, SemanticMask
from jxhash.nets.mlp import MLPEncoder, kernel_init
from jxhash.nets.multiscale import (BidirectionalBilinear, BilinearInteraction, HierarchicalEncoder,
                                    MultiScaleFusion, pool_and_upsample)

__all__ = ["BidirectionalBilinear", "BilinearInteraction", "CNNF", "HierarchicalEncoder", "MLPEncoder",
           "MaskedMLPEncoder", "ModalityEnhancedAttention", "MultiScaleFusion", "SemanticMask", "kernel_init",
           "load_vgg_f", "local_response_norm", "pool_and_upsample", "preprocess"]
