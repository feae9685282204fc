"""DCMH's training epoch in PyTorch, written the way the public PyTorch port does it.

The baseline for `bench_train.py`. The port is WendellGul/DCMH (`main.py`, `train`); this file
keeps its training loop and changes only what a feature-based speed comparison needs:

- Image net on precomputed 4096-d (CNN-F fc7-sized) features: Linear(D -> 4096) -> ReLU ->
  Linear(4096 -> K), instead of the whole CNN-F. Text net Linear(T -> 8192) -> ReLU ->
  Linear(8192 -> K) (the port's (T x 1) "convolution" is this Linear). No tanh. Weights and
  biases N(0, 0.01²) as in the port's text module and fc8.
- Per batch, as in the port: a fresh `np.random.permutation(n)[:bs]` (rows may repeat across
  steps), S = 1[L_batch · L_trainᵀ > 0] against the whole training set, the batch outputs
  written into the buffer before the loss, then
      loss = -Σ(S θ - log(1 + e^θ)) + γ ||B_batch - cur||² + η ||cur·1 + buffer[others]·1||²
  over bs · n, plain SGD (no momentum, no weight decay), image phase then text phase,
  B = sign(F + G) at the end of the epoch.
- log(1 + e^θ) is `softplus(θ)` (same value; the port's form overflows to inf for θ > 88,
  and jxhash uses softplus too).
- The text phase's balance term uses the batch outputs plus the other rows of G, as the
  image phase and the TF release do; the port sums the stale G buffer there, which gives that
  term no gradient (a bug of that port, WendellGul/DCMH). The cost is the same.
- The port's whole-training-set loss after each epoch (`calc_loss`, an n x n matrix) is
  logging, not training, and is left out (jxhash computes no such loss either).

On a GPU (`device="cuda"`, as the port's `.cuda()` does) the per-step batch draw stays on the
host, as in the port; `autocast=torch.bfloat16` runs the forward pass and the loss under
`torch.autocast` (bf16 matmuls with float32 accumulation, float32 weights); TF32 is the
caller's `torch.backends.cuda.matmul.allow_tf32`.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _mlp(width_in: int, hidden: int, bits: int) -> nn.Sequential:
  net = nn.Sequential(nn.Linear(width_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, bits))
  for layer in net:
    if isinstance(layer, nn.Linear):
      nn.init.normal_(layer.weight, std=0.01)
      nn.init.normal_(layer.bias, std=0.01)
  return net


class DCMHReference:
  """Two networks, the F/G/B buffers and the port's per-batch alternating SGD.

  Args:
    image: (n, D) float32 image features of the training split.
    text: (n, T) float32 bag-of-words.
    labels: (n, C) multi-hot labels.
    bits: code length K.
    image_hidden, text_hidden: hidden widths (4096 and 8192 in DCMH).
    batch_size: rows per step (128 in every release).
    lr: SGD learning rate (the first epoch's, 10^-1.5).
    gamma, eta: quantization and balance weights (1 in every release).
    seed: seeds torch (weights, buffers) and the batch draws.
    threads: torch intra-op threads.
    device: "cpu" or "cuda".
    autocast: None (float32) or a dtype for `torch.autocast` (torch.bfloat16).
  """

  def __init__(self, image, text, labels, *, bits: int = 64, image_hidden: int = 4096,
               text_hidden: int = 8192, batch_size: int = 128, lr: float = 10 ** -1.5,
               gamma: float = 1.0, eta: float = 1.0, seed: int = 0, threads: int = 2,
               device: str = "cpu", autocast=None):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    self.device = torch.device(device)
    self.autocast = autocast
    self.rng = np.random.RandomState(seed)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(self.device)  # noqa: E731
    self.x, self.y, self.labels = as_tensor(image), as_tensor(text), as_tensor(labels)
    self.n = self.x.shape[0]
    self.bs = min(batch_size, self.n)
    self.gamma, self.eta = gamma, eta
    self.nets = {"image": _mlp(self.x.shape[1], image_hidden, bits).to(self.device),
                 "text": _mlp(self.y.shape[1], text_hidden, bits).to(self.device)}
    self.optimizers = {m: torch.optim.SGD(net.parameters(), lr=lr) for m, net in self.nets.items()}
    # the port starts both buffers N(0, 1) and B from them
    self.buffers = {"image": torch.randn(self.n, bits).to(self.device),
                    "text": torch.randn(self.n, bits).to(self.device)}
    self.binary = torch.sign(self.buffers["image"] + self.buffers["text"])
    # the port allocates the ones vectors of the balance term once, outside the loop
    self.ones = torch.ones(self.bs, 1, device=self.device)
    self.ones_rest = torch.ones(self.n - self.bs, 1, device=self.device)

  def _precision(self):
    if self.autocast is None:
      return contextlib.nullcontext()
    return torch.autocast(self.device.type, dtype=self.autocast)

  @property
  def steps(self) -> int:
    """Steps per phase, as in the port: n // bs."""
    return max(1, self.n // self.bs)

  def _phase(self, modality: str) -> float:
    other = "text" if modality == "image" else "image"
    inputs = self.x if modality == "image" else self.y
    net, optimizer = self.nets[modality], self.optimizers[modality]
    buffer, other_buffer = self.buffers[modality], self.buffers[other]
    total = 0.0
    for _ in range(self.steps):
      ind_np = self.rng.permutation(self.n)[:self.bs]
      rest = torch.from_numpy(np.setdiff1d(np.arange(self.n), ind_np)).to(self.device)
      ind = torch.from_numpy(ind_np).to(self.device)
      with self._precision():
        similarity = (self.labels[ind] @ self.labels.t() > 0).float()  # (bs, n)
        cur = net(inputs[ind])
        buffer[ind] = cur.detach().float()
        theta = 0.5 * cur @ other_buffer.t()
        loglik = -torch.sum(similarity * theta - F.softplus(theta))
        quantization = torch.sum((self.binary[ind] - cur) ** 2)
        balance = torch.sum((cur.t() @ self.ones + buffer[rest].t() @ self.ones_rest) ** 2)
        loss = (loglik + self.gamma * quantization + self.eta * balance) / (self.bs * self.n)
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      total += loss.item()
    return total / self.steps

  def epoch(self) -> dict:
    """One DCMH epoch: image phase, text phase, B = sign(F + G). Returns mean phase losses."""
    logs = {"image/loss": self._phase("image"), "text/loss": self._phase("text")}
    self.binary = torch.sign(self.buffers["image"] + self.buffers["text"])
    if self.device.type == "cuda":
      torch.cuda.synchronize()
    return logs
