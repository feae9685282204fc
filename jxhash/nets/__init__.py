"""Flax linen networks (pure `init` / `apply`). Every network of every method lives here.

Shared encoders: `MLPEncoder` (DCMH's feature and text nets), `CNNF` (CNN-F on pixels, weights
from `vgg_f.load_vgg_f`), `HierarchicalEncoder` (multi-scale layers with bilinear
interaction), `MaskedMLPEncoder` (a semantic mask over the hidden features). Method-specific
networks: `ProxyNet` (DCPH), `LabelNet` with `ModalityEnhancedAttention` (MMACH),
`MIEGenerator` and `BitGate` (UCHM). Pretrained encoders: CLIP's ViT image and text towers
(`CLIPImageTower`, `CLIPTextTower`, weights from `load_clip`; jxhash.nets.clip), torchvision's
`AlexNet` and `ResNet` (18/34; weights from `load_alexnet` / `load_resnet`), all verified against
their reference implementations (docs/encoders.md).
"""

from jxhash.nets.attention import ModalityEnhancedAttention
from jxhash.nets.clip import CLIPImageTower, CLIPTextTower, ClipConfig, load_clip
from jxhash.nets.alexnet import AlexNet, load_alexnet
from jxhash.nets.cnnf import CNNF, local_response_norm
from jxhash.nets.interaction import BitGate, MIEGenerator
from jxhash.nets.label import LabelNet
from jxhash.nets.mask import MaskedMLPEncoder, SemanticMask
from jxhash.nets.mlp import MLPEncoder, kernel_init
from jxhash.nets.multiscale import (BidirectionalBilinear, BilinearInteraction, HierarchicalEncoder,
                                    MultiScaleFusion, pool_and_upsample)
from jxhash.nets.proxy import ProxyNet
from jxhash.nets.resnet import ResNet, load_resnet
from jxhash.nets.vgg_f import load_vgg_f, preprocess

__all__ = ["AlexNet", "ResNet", "load_alexnet", "load_resnet", "BidirectionalBilinear", "BilinearInteraction", "BitGate", "CLIPImageTower", "CLIPTextTower", "CNNF",
           "ClipConfig", "HierarchicalEncoder", "LabelNet",
           "MIEGenerator", "MLPEncoder", "MaskedMLPEncoder", "ModalityEnhancedAttention", "MultiScaleFusion",
           "ProxyNet", "SemanticMask", "kernel_init", "load_vgg_f", "local_response_norm", "pool_and_upsample",
           "load_clip", "preprocess"]
