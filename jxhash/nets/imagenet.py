"""What torchvision's ImageNet networks share: adaptive average pooling and the importer's checks.

`adaptive_avg_pool` is `torch.nn.AdaptiveAvgPool2d` on NHWC arrays; `state_dict_from` and
`check_state_dict` turn a weights file or dict into a checked {name: array} state dict, so that
a wrong file fails in one line naming the first missing, unexpected or misshapen entry.
"""

from __future__ import annotations

import hashlib
import pathlib
import re

import jax.numpy as jnp
import numpy as np

from jxhash.errors import UserError


def _pool_matrix(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) averaging weights of torch's adaptive pooling bins.

  Bin i covers [floor(i * in / out), ceil((i + 1) * in / out)) (ATen's start_index / end_index);
  bins overlap when `in` is not a multiple of `out` and repeat rows when `in < out`.
  """
  weights = np.zeros((size_out, size_in), np.float32)
  for i in range(size_out):
    start = (i * size_in) // size_out
    end = -((-(i + 1) * size_in) // size_out)
    weights[i, start:end] = 1.0 / (end - start)
  return weights


def adaptive_avg_pool(x, output_size: tuple[int, int]):
  """torch.nn.AdaptiveAvgPool2d(output_size) on (N, H, W, C) -> (N, out_h, out_w, C)."""
  out_h, out_w = output_size
  h, w = x.shape[1], x.shape[2]
  if (h, w) == (out_h, out_w):
    return x
  rows = jnp.asarray(_pool_matrix(h, out_h), x.dtype)
  cols = jnp.asarray(_pool_matrix(w, out_w), x.dtype)
  return jnp.einsum("ih,jw,nhwc->nijc", rows, cols, x)


def file_sha256(path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def check_name_hash(path: pathlib.Path, stems: tuple[str, ...]) -> None:
  """torchvision's download names, `<stem>-<8+ hex digits>.pth`, carry the start of the file's sha256.

  Checked only for the network's own torchvision stems ("alexnet-owt", "resnet34"), so that a
  user's "model-20240101.pth" is not mistaken for one. A file whose content disagrees is refused.
  """
  match = re.fullmatch(r"(.+)-([0-9a-f]{8,64})\.pth", path.name)
  if match is None or match.group(1) not in stems:
    return
  prefix = match.group(2)
  digest = file_sha256(path)
  if not digest.startswith(prefix):
    raise UserError(f"weights file {path}: its name says sha256 {prefix}..., its content hashes to "
                    f"{digest[:len(prefix)]}...; the download is damaged, download it again (or rename the file "
                    "if it is another one)")


def state_dict_from(path_or_state_dict, *, check_hash: bool = True, stems: tuple[str, ...] = ()) -> tuple[dict, str]:
  """({name: array}, where) from a weights file path or a ready dict of arrays.

  With `check_hash`, a file named like torchvision's download of the network (`stems`) is checked
  against the sha256 prefix in its name (`check_name_hash`).
  """
  if isinstance(path_or_state_dict, dict):
    return {k: np.asarray(v) for k, v in path_or_state_dict.items()}, "state dict"
  from jxhash.nets.torch_io import read_state_dict
  path = pathlib.Path(path_or_state_dict)
  if check_hash and path.is_file():
    check_name_hash(path, stems)
  return read_state_dict(path), str(path)


def check_state_dict(state: dict, expected: dict[str, tuple], where: str, *, ignore=(), model: str) -> None:
  """Every expected name present with its shape, and nothing else (names matching `ignore` aside)."""
  for name, shape in expected.items():
    if name not in state:
      raise UserError(f"{where}: no {name!r} in the weights; not a torchvision {model} state dict "
                      f"(it holds {len(state)} entries, first {next(iter(state), None)!r})")
    if tuple(state[name].shape) != tuple(shape):
      raise UserError(f"{where}: {name!r} has shape {tuple(state[name].shape)}, torchvision's {model} has "
                      f"{tuple(shape)}")
  for name in state:
    if name not in expected and not any(name.endswith(suffix) for suffix in ignore):
      raise UserError(f"{where}: unexpected entry {name!r} in the weights; not a torchvision {model} state dict")


def conv_kernel(weight) -> np.ndarray:
  """torch Conv2d weight (out, in, kh, kw) -> Flax HWIO, float32."""
  return np.ascontiguousarray(np.asarray(weight, np.float32).transpose(2, 3, 1, 0))


def dense_kernel(weight) -> np.ndarray:
  """torch Linear weight (out, in) -> Flax (in, out), float32."""
  return np.ascontiguousarray(np.asarray(weight, np.float32).T)


__all__ = ["adaptive_avg_pool", "check_name_hash", "check_state_dict", "conv_kernel", "dense_kernel",
           "file_sha256", "state_dict_from"]
