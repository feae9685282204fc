"""Encoders: `jxhash extract`'s forward and a fine-tuning step against open_clip / torchvision.

Usage (from the repository root, venv active; open_clip, torch and torchvision installed):

  python benchmarks/bench_extract.py                                  # every encoder, defaults below
  python benchmarks/bench_extract.py --encoders alexnet --batches 2 --train-images 64
  python benchmarks/bench_extract.py --device gpu                     # a GPU: bf16 compute both sides

Encoders, on random weights (torch's initialisation, converted to jxhash with the importers, so
both sides compute the same function; the largest difference of the outputs is printed):
  clip-vit-b32  CLIP ViT-B/32 image tower, projected embedding (open_clip "ViT-B-32-quickgelu")
  alexnet       torchvision AlexNet, fc7 after its ReLU
  resnet34      torchvision ResNet-34, global average pool

Measured, in one run, jxhash and the reference interleaved (so a load change hits both):
  forward       the batched forward `jxhash extract` runs (its loader's Model.encode_images: one
                jitted call of a fixed batch shape, float32, the result copied to the host) on
                random 224×224 inputs, against the reference's forward under
                torch.inference_mode; with --device gpu also both in bf16 (jxhash's modules at
                dtype bfloat16, torch under autocast);
  +preprocess   the same from in-memory PIL images of 500×375 (a typical Flickr size): each
                image through the encoder's eval transform, stacked, then the forward; both
                sides single-threaded in the transform (extract decodes on 4 threads);
  fine-tune     one epoch of `--train-images` images in batches of `--train-batch` (bf16 compute
                with --device gpu, float32 on CPU): forward,
                a 64-bit tanh hashing head with a squared loss against random codes, backward
                through the whole backbone (ResNet-34 with batch statistics, AlexNet without
                dropout), and an SGD update; torch the same with autograd and torch.optim.SGD.
Each rate is images/s (the median over `--repeat` timed passes after one untimed pass that
compiles). The fine-tuning step's FLOPs are XLA's count of the compiled jxhash step; the fraction
of peak divides the achieved FLOP/s by the machine's measured peak: the best rate of a large
float32 (bf16 with --device gpu) matmul in XLA, `--matmul N` (N×N by N×N).

Threads: `--threads N` sets torch.set_num_threads(N); XLA:CPU uses one pool over every core, so
N < os.cpu_count() also pins the process to N cores (os.sched_setaffinity), which both sides
then share. Results: benchmarks/ENCODERS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

ENCODERS = ("clip-vit-b32", "alexnet", "resnet34")
BITS = 64


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated subset of " + ", ".join(ENCODERS))
  p.add_argument("--batch", type=int, default=32, help="forward batch (extract's default: 32)")
  p.add_argument("--batches", type=int, default=3, help="timed batches per pass (forward)")
  p.add_argument("--repeat", type=int, default=3, help="timed passes; the median is reported")
  p.add_argument("--train-images", type=int, default=256, help="images in the fine-tuning epoch")
  p.add_argument("--train-batch", type=int, default=32)
  p.add_argument("--threads", type=int, default=os.cpu_count())
  p.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="gpu: bf16 compute, torch on cuda")
  p.add_argument("--matmul", type=int, default=2048, help="side of the peak-FLOP/s matmul")
  p.add_argument("--skip", default="", help="comma-separated parts to leave out: forward, preprocess, train")
  return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# The two sides of each encoder


class Pair:
  """One encoder: the torch reference, jxhash's forward and train step, and the two eval transforms."""

  def __init__(self, name: str, args):
    import jax.numpy as jnp
    import torch
    import torchvision
    self.name = name
    self.gpu = args.device == "gpu"
    self.dtype = jnp.bfloat16 if self.gpu else jnp.float32
    self.torch_device = "cuda" if self.gpu and torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    tv = torchvision.transforms
    if name == "clip-vit-b32":
      import open_clip
      self.model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
      self.torch_forward = self.model.encode_image
      self.torch_transform = open_clip.image_transform(224, is_train=False)
      self.torch_params = self.model.visual.parameters
    else:
      factory = torchvision.models.alexnet if name == "alexnet" else torchvision.models.resnet34
      self.model = factory(weights=None).eval()
      if name == "alexnet":
        m = self.model
        self.torch_forward = lambda x: m.classifier[:6](torch.flatten(m.avgpool(m.features(x)), 1))
      else:
        body = torch.nn.Sequential(*list(self.model.children())[:-1], torch.nn.Flatten())
        self.torch_forward = body
      self.torch_transform = tv.Compose([tv.Resize(256), tv.CenterCrop(224), tv.ToTensor(),
                                         tv.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
      self.torch_params = self.model.parameters
    self.model.to(self.torch_device)
    state = {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
    self._build_jax(state)

  def _build_jax(self, state):
    import jax
    import jax.numpy as jnp
    from jxhash.extract import ENCODERS, _jitted
    # exactly what `jxhash extract` runs: its loader (which takes a state dict as well as a file)
    # gives the per-image transform and the batched forward
    model = ENCODERS[self.name].load(state)
    self.jax_forward, self.jax_transform = model.encode_images, model.image_input
    if self.name == "clip-vit-b32":
      from jxhash.nets import clip
      params, cfg = clip.load_clip(state)
      params = jax.device_put(params)
      self.jax_forward_bf16 = lambda x: np.asarray(clip.encode_image(params, cfg, x, dtype=jnp.bfloat16))
      module, variables = clip.CLIPImageTower(cfg, self.dtype), {"params": params["visual"]}
      apply = lambda v, x: module.apply(v, x)  # noqa: E731
    elif self.name == "alexnet":
      from jxhash.nets.alexnet import AlexNet, load_alexnet
      params = load_alexnet(state)
      params.pop("fc8")
      module, variables = AlexNet(features_only=True, dtype=self.dtype), {"params": params}
      self.jax_forward_bf16 = _jitted(AlexNet(features_only=True, dtype=jnp.bfloat16), variables)
      apply = lambda v, x: module.apply(v, x)  # noqa: E731
    else:
      from jxhash.nets.resnet import ResNet, load_resnet
      variables = load_resnet(state, 34)
      variables["params"].pop("fc")
      module = ResNet(34, features_only=True, dtype=self.dtype)
      self.jax_forward_bf16 = _jitted(ResNet(34, features_only=True, dtype=jnp.bfloat16), variables)
      apply = None
    dim = {"clip-vit-b32": 512, "alexnet": 4096, "resnet34": 512}[self.name]
    head = jax.random.normal(jax.random.key(1), (dim, BITS), jnp.float32) / np.sqrt(dim)
    lr = 1e-3

    def loss_fn(params, other, x, target):
      if apply is None:  # ResNet: batch statistics, the running ones updated
        features, updates = module.apply({"params": params["net"], **other}, x, train=True, mutable=["batch_stats"])
      else:
        features, updates = apply({"params": params["net"]}, x), other
      codes = jnp.tanh(features.astype(jnp.float32) @ params["head"])
      return jnp.mean((codes - target) ** 2), updates

    def step(params, other, x, target):
      (loss, other), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, other, x, target)
      params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
      return params, other, loss

    self.jax_step = jax.jit(step, donate_argnums=(0, 1))
    fresh = lambda tree: jax.tree.map(lambda a: jnp.array(a, copy=True), tree)  # noqa: E731 - the step donates
    self.jax_train_state = lambda: (fresh({"net": variables["params"], "head": head}),
                                    fresh({k: v for k, v in variables.items() if k != "params"}))
    self.dim = dim

  # -- torch ----------------------------------------------------------------------------------

  def torch_batch(self, x: np.ndarray, bf16: bool = False):
    import contextlib
    import torch
    with torch.inference_mode(), (self._autocast() if bf16 else contextlib.nullcontext()):
      out = self.torch_forward(torch.from_numpy(x).permute(0, 3, 1, 2).to(self.torch_device))
      return out.float().cpu().numpy()

  def _autocast(self):
    import contextlib
    import torch
    if self.gpu and self.torch_device == "cuda":
      return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

  def torch_train_epoch(self, images: np.ndarray, targets: np.ndarray, batch: int):
    import torch
    self.model.train()
    if self.name == "alexnet":  # no dropout, as on the jxhash side
      for m in self.model.modules():
        if isinstance(m, torch.nn.Dropout):
          m.eval()
    head = torch.nn.Parameter(torch.randn(self.dim, BITS, device=self.torch_device) / np.sqrt(self.dim))
    opt = torch.optim.SGD([*self.torch_params(), head], lr=1e-3)
    for lo in range(0, len(images), batch):
      x = torch.from_numpy(images[lo:lo + batch]).permute(0, 3, 1, 2).to(self.torch_device)
      t = torch.from_numpy(targets[lo:lo + batch]).to(self.torch_device)
      with self._autocast():
        loss = ((torch.tanh(self.torch_forward(x).float() @ head) - t) ** 2).mean()
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
    if self.torch_device == "cuda":
      torch.cuda.synchronize()
    self.model.eval()
    return loss.item()

  # -- jxhash ---------------------------------------------------------------------------------

  def jax_train_epoch(self, images, targets, batch: int):
    import jax
    params, other = self.jax_train_state()
    loss = None
    for lo in range(0, len(images), batch):
      params, other, loss = self.jax_step(params, other, images[lo:lo + batch], targets[lo:lo + batch])
    return float(jax.block_until_ready(loss))

  def step_flops(self, images, targets, batch: int) -> float:
    params, other = self.jax_train_state()
    compiled = self.jax_step.lower(params, other, images[:batch], targets[:batch]).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


# ---------------------------------------------------------------------------------------------
# Timing


def timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def rates(jax_fn, torch_fn, n_images: int, repeat: int) -> tuple[float, float]:
  """Median images/s of each side; one untimed call each first, then the two sides alternate."""
  jax_fn()
  torch_fn()
  jt, tt = [], []
  for _ in range(repeat):
    jt.append(timed(jax_fn))
    tt.append(timed(torch_fn))
  return n_images / statistics.median(jt), n_images / statistics.median(tt)


def peak_flops(n: int, gpu: bool) -> float:
  import jax
  import jax.numpy as jnp
  dtype = jnp.bfloat16 if gpu else jnp.float32
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  mm = jax.jit(jnp.matmul)
  jax.block_until_ready(mm(a, b))
  best = min(timed(lambda: jax.block_until_ready(mm(a, b))) for _ in range(5))
  return 2 * n ** 3 / best


def random_photos(count: int, seed: int = 0):
  from PIL import Image
  rng = np.random.default_rng(seed)
  return [Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)) for _ in range(count)]


def main(argv=None):
  args = parse_args(argv)
  if args.threads < (os.cpu_count() or 1) and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
  import jax
  import torch
  torch.set_num_threads(args.threads)
  skip = set(filter(None, args.skip.split(",")))
  if args.device == "cpu":
    jax.config.update("jax_platforms", "cpu")
  try:
    import open_clip
    clip_version = open_clip.__version__
  except ImportError:
    clip_version = "absent"
  import torchvision
  print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), torchvision {torchvision.__version__}, "
        f"open_clip {clip_version}")
  peak = peak_flops(args.matmul, args.device == "gpu")
  print(f"peak: {peak / 1e9:.1f} GFLOP/s ({args.matmul}² matmul, "
        f"{'bf16' if args.device == 'gpu' else 'float32'}, XLA)")
  rng = np.random.default_rng(0)
  rows = []
  for name in args.encoders.split(","):
    pair = Pair(name, args)
    n = args.batch * args.batches
    x = rng.normal(size=(args.batch, 224, 224, 3)).astype(np.float32)
    diff = np.abs(pair.jax_forward(x) - pair.torch_batch(x)).max() / np.abs(pair.torch_batch(x)).max()
    print(f"{name}: max |jxhash - reference| / max |reference| = {diff:.1e}")
    if "forward" not in skip:
      j, t = rates(lambda: [pair.jax_forward(x) for _ in range(args.batches)],
                   lambda: [pair.torch_batch(x) for _ in range(args.batches)], n, args.repeat)
      rows.append((name, "forward", j, t))
      print(f"  forward:     jxhash {j:7.1f} images/s, reference {t:7.1f}, ratio {j / t:.2f}")
      if args.device == "gpu":
        j, t = rates(lambda: [pair.jax_forward_bf16(x) for _ in range(args.batches)],
                     lambda: [pair.torch_batch(x, bf16=True) for _ in range(args.batches)], n, args.repeat)
        rows.append((name, "forward bf16", j, t))
        print(f"  forward bf16: jxhash {j:7.1f} images/s, reference {t:7.1f}, ratio {j / t:.2f}")
    if "preprocess" not in skip:
      photos = random_photos(args.batch)

      def jax_pre():
        for _ in range(args.batches):
          pair.jax_forward(np.stack([pair.jax_transform(p) for p in photos]))

      def torch_pre():
        for _ in range(args.batches):
          pair.torch_batch(torch.stack([pair.torch_transform(p) for p in photos]).permute(0, 2, 3, 1).numpy())

      j, t = rates(jax_pre, torch_pre, n, args.repeat)
      rows.append((name, "+preprocess", j, t))
      print(f"  +preprocess: jxhash {j:7.1f} images/s, reference {t:7.1f}, ratio {j / t:.2f}")
    if "train" not in skip:
      images = rng.normal(size=(args.train_images, 224, 224, 3)).astype(np.float32)
      targets = np.sign(rng.normal(size=(args.train_images, BITS))).astype(np.float32)
      flops = pair.step_flops(images, targets, args.train_batch)
      j, t = rates(lambda: pair.jax_train_epoch(images, targets, args.train_batch),
                   lambda: pair.torch_train_epoch(images, targets, args.train_batch), args.train_images,
                   max(1, args.repeat - 1))
      per_image = flops / args.train_batch
      rows.append((name, "fine-tune", j, t))
      print(f"  fine-tune:   jxhash {j:7.1f} images/s, reference {t:7.1f}, ratio {j / t:.2f}; "
            f"{per_image / 1e9:.1f} GFLOP/image (XLA's count), jxhash at {j * per_image / peak:.0%} of peak, "
            f"reference at {t * per_image / peak:.0%}")
  print("\n| encoder | measure | jxhash images/s | reference images/s | jxhash / reference |")
  print("|---|---|---|---|---|")
  for name, what, j, t in rows:
    print(f"| {name} | {what} | {j:.1f} | {t:.1f} | {j / t:.2f} |")


if __name__ == "__main__":
  main()
