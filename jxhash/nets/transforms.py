"""Image files -> network inputs, as each encoder's weights were published to expect.

`open_image(path)` reads any image Pillow reads as RGB (a damaged file is a one-line error naming
it). `imagenet(image)` is torchvision's evaluation transform for its ImageNet classifiers
(AlexNet, ResNet): Resize(256) of the shorter side with PIL's bilinear filter (antialiased when
shrinking: PIL's resampling widens the filter by the scale factor, which is what torchvision runs
on PIL images), CenterCrop(224), ToTensor (/255), Normalize(ImageNet mean, std), returned NHWC.
`cnn_f(image, mean_image)` is DCMH's CNN-F input (`jxhash.nets.vgg_f.preprocess`). CLIP's
transform lives with its model (`jxhash.nets.clip.preprocess_image`).

(The module is not called `preprocess`: `jxhash.nets.preprocess` is CNN-F's function, exported by
the package, and importing a submodule of that name would rebind it.)

References: torchvision `transforms/functional.py` (`resize`'s output size: the longer side is
int(256 * long / short); `center_crop`'s offsets: int(round((size - 224) / 2))), the
IMAGENET1K_V1 weights' `ImageClassification(crop_size=224, resize_size=256)` transform.
"""

from __future__ import annotations

import pathlib

import numpy as np

from jxhash.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE = 256
CROP = 224

IMAGENET_DESCRIPTION = ("torchvision ImageNet eval: Resize(256, shorter side, PIL bilinear), CenterCrop(224), "
                        "ToTensor, Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)); NHWC float32")
CNN_F_DESCRIPTION = ("DCMH CNN-F: RGB 0..255 resized to 224x224 (bicubic, antialiased), minus the weights "
                     "file's average image; NHWC float32")


def open_image(path):
  """The image at `path` as an RGB PIL image, fully decoded; a UserError naming the file if not."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as image:
      return image.convert("RGB")
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
    # truncated files raise OSError at decode time, not at open
    reason = " ".join(str(e).split())[:120] or type(e).__name__
    raise UserError(f"cannot read image {pathlib.Path(path)}: {reason}") from e


def _resize_shorter(image, size: int):
  from PIL import Image
  width, height = image.size
  short, long = (width, height) if width <= height else (height, width)
  if short == size:
    return image
  new_long = int(size * long / short)
  new = (size, new_long) if width <= height else (new_long, size)
  return image.resize(new, Image.BILINEAR)


def _center_crop(image, size: int):
  width, height = image.size
  if width < size or height < size:
    # torchvision pads with zeros first; after Resize(256) this cannot happen
    raise UserError(f"image of {width}×{height} is smaller than the {size}×{size} crop")
  top = int(round((height - size) / 2.0))
  left = int(round((width - size) / 2.0))
  return image.crop((left, top, left + size, top + size))


def imagenet(image, *, resize: int = RESIZE, crop: int = CROP) -> np.ndarray:
  """A PIL image -> (crop, crop, 3) float32, torchvision's ImageNet evaluation transform."""
  image = _center_crop(_resize_shorter(image.convert("RGB"), resize), crop)
  pixels = np.asarray(image, np.uint8).astype(np.float32) / np.float32(255)
  mean = np.asarray(IMAGENET_MEAN, np.float32)
  std = np.asarray(IMAGENET_STD, np.float32)
  return (pixels - mean) / std


def cnn_f(image, mean_image) -> np.ndarray:
  """A PIL image -> (224, 224, 3) float32 CNN-F input (jxhash.nets.vgg_f.preprocess)."""
  from jxhash.nets.vgg_f import preprocess
  return preprocess(np.asarray(image.convert("RGB"), np.uint8), mean_image)


__all__ = ["CNN_F_DESCRIPTION", "IMAGENET_DESCRIPTION", "IMAGENET_MEAN", "IMAGENET_STD", "cnn_f", "imagenet",
           "open_image"]
