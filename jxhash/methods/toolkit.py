"""The plumbing methods share, written once: a method file then shows only what is new in it.

Most methods here keep, besides their networks, a buffer of each network's latest outputs over
the whole training set (DCMH's F and G; MMACH's label codes Lc) and the shared binary codes
B = sign(sum of the buffers). `BufferedState` holds that; the functions below build the
networks' TrainStates, the buffers and the learning-rate schedule, write a batch's outputs
into a buffer, refresh B, and encode. Names: "outputs" are real-valued network outputs (the
buffers), "codes" are ±1 everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from jxhash import losses
from jxhash.codes import binarize
from jxhash.errors import UserError
from jxhash.nets import MLPEncoder
from jxhash.nets import backbones
from jxhash.spec import MODALITIES, BaseConfig, Dims, steps_per_epoch


@flax.struct.dataclass
class BufferedState:
  """Networks, their output buffers over the training set, and the shared codes.

  Attributes:
    nets: name ("image", "text", ...) -> TrainState (or any object with `params`/`apply_fn`).
    outputs: name -> (n, K) buffer of that network's latest real-valued outputs (F, G, ...).
    codes: (n, K) the shared binary codes B in {-1, +1}.
  """

  nets: dict
  outputs: dict
  codes: jax.Array


# --------------------------------------------------------------------------- checks


def check_modality(modality: str) -> None:
  if modality not in MODALITIES:
    raise UserError(f"modality must be 'image' or 'text', got {modality!r}")


# --------------------------------------------------------------------------- optimisers


def epoch_schedule(kind: str, *, start: float, end: float, epochs: int, steps: int) -> optax.Schedule:
  """A learning rate that is constant within an epoch and moves between epochs.

  Args:
    kind: "linear" (start -> end linearly over the epochs; DCMH's TF/PyTorch code),
      "logspace" (geometric start -> end; DCMH's MATLAB code) or "constant".
    start, end: first and last epoch's rate.
    epochs: number of epochs.
    steps: optimizer updates per epoch.
  """
  if kind not in ("linear", "logspace", "constant"):
    raise UserError(f"unknown lr schedule {kind!r}; choose linear, logspace or constant")
  epochs = max(epochs, 1)
  if kind == "linear":
    table = np.linspace(start, end, epochs)
  elif kind == "logspace":
    table = np.logspace(np.log10(start), np.log10(end), epochs)
  else:
    table = np.full(epochs, start)
  # a numpy constant, not a jax array: the schedule lives in TrainState.tx (static), and a
  # jax array created while init is being traced would leak as a tracer
  table = np.asarray(table, np.float32)

  def schedule(count):
    return jnp.asarray(table)[jnp.minimum(count // steps, epochs - 1)]

  return schedule


def config_schedule(config, num_train: int) -> optax.Schedule:
  """`epoch_schedule` from a config's lr, lr_end, lr_schedule, epochs and batch_size fields."""
  return epoch_schedule(config.lr_schedule, start=config.lr, end=config.lr_end, epochs=config.epochs,
                        steps=steps_per_epoch(num_train, config.batch_size))


def scale_by_fan_in() -> optax.GradientTransformation:
  """Divide each weight matrix's (or convolution kernel's) update by its fan-in.

  With inputs standardised and weights initialised with variance 1 / fan-in, a plain SGD step
  changes a layer's outputs in proportion to its fan-in: the same learning rate that trains a
  layer fed by 10 LDA topics makes one fed by 4096 hidden units diverge. Scaling each kernel's
  step by 1 / fan-in makes the change of every layer's outputs independent of its width (the
  learning-rate rule of LeCun et al., "Efficient BackProp", 1998, and of the neural-tangent
  parameterisation), so one learning rate fits inputs of any width. Parameters with fewer than
  two axes (biases, normalisation scales) are left as they are. Fan-in = the product of all but
  the last axis (Flax's Dense and Conv kernel layouts).
  """

  def update(updates, state, params=None):
    del params
    scaled = jax.tree.map(lambda u: u / np.prod(u.shape[:-1]) if u.ndim >= 2 else u, updates)
    return scaled, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def sgd(learning_rate, *, weight_decay: float = 0.0, momentum: float | None = None, lr_scaling: str = "none",
        clip_norm: float = 0.0):
  """SGD with optional L2 weight decay added to the gradient (as the MATLAB/PyTorch codes do).

  Args:
    learning_rate: a float or an optax schedule.
    weight_decay: L2 weight decay added to the gradient.
    momentum: None or 0 for plain SGD.
    lr_scaling: "none" (one rate for every parameter, as the papers) or "fan_in" (each kernel's
      step divided by its fan-in: `scale_by_fan_in`).
    clip_norm: > 0 clips the gradient's global norm to this value first (0: no clipping).
  """
  parts = []
  if clip_norm:
    parts.append(optax.clip_by_global_norm(clip_norm))
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts.append(optax.sgd(learning_rate, momentum=momentum or None))
  if lr_scaling == "fan_in":
    parts.append(scale_by_fan_in())
  elif lr_scaling != "none":
    raise UserError(f"unknown lr_scaling {lr_scaling!r}; choose 'none' or 'fan_in'")
  return optax.chain(*parts)


def freeze(tx: optax.GradientTransformation, names=("mean_image",)) -> optax.GradientTransformation:
  """`tx` for every parameter except those whose path contains one of `names`, which never
  change (not even by weight decay): constants that live in params so checkpoints carry them."""

  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if any(getattr(k, "key", None) in names for k in path) else "train", params)

  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def apply_gradients(state: train_state.TrainState, loss_fn, *args):
  """value_and_grad of loss_fn(params, *args) -> (loss, aux); returns (new_state, loss, aux)."""
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, *args)
  return state.apply_gradients(grads=grads), loss, aux


# --------------------------------------------------------------------------- networks


def split_keys(key: jax.Array, names) -> dict:
  """One PRNG key per name (in order), from one split of `key`."""
  names = tuple(names)
  return dict(zip(names, jax.random.split(key, len(names))))


def zero_batch(dims: Dims, modality: str) -> jax.Array:
  """A (1, ...) row of zeros of `modality`'s input shape: what networks initialise on (float32;
  int32 for token ids)."""
  tokens = modality == "text" and dims.text_tokens
  return jnp.zeros((1,) + dims.width(modality), jnp.int32 if tokens else jnp.float32)


def make_state(module, params, tx: optax.GradientTransformation) -> train_state.TrainState:
  """A flax TrainState for one network."""
  return train_state.TrainState.create(apply_fn=module.apply, params=params, tx=tx)


class NormState(train_state.TrainState):
  """TrainState of a network with BatchNorm: its running statistics ({} when it has none)."""

  batch_stats: Any


def norm_state(module, variables: dict, tx: optax.GradientTransformation) -> NormState:
  """A NormState from `module.init`'s variables."""
  return NormState.create(apply_fn=module.apply, params=variables["params"], tx=tx,
                          batch_stats=variables.get("batch_stats", {}))


def apply_norm(net: NormState, params, stats, *args, train: bool, **kwargs):
  """(net's output on `args`, the running statistics after it): in training mode BatchNorm
  normalises by the batch and updates `stats`; otherwise it reads them and they stay."""
  variables = {"params": params, "batch_stats": stats} if stats else {"params": params}
  if not train:
    return net.apply_fn(variables, *args, train=False, **kwargs), stats
  out, updates = net.apply_fn(variables, *args, train=True, mutable=["batch_stats"], **kwargs)
  return out, updates.get("batch_stats", stats)


def network_states(keys: Mapping[str, jax.Array], modules: Mapping[str, Any], dims: Dims, tx=None, *,
                   txs: Mapping[str, Any] | None = None, create: Callable = make_state, **init_kwargs) -> dict:
  """A TrainState per modality network, each initialised on a zero row of its input.

  Args:
    keys: modality -> init key.
    modules: modality ("image" / "text") -> flax module.
    dims: input sizes.
    tx: the optimiser of every network (whatever `create` takes), or
    txs: modality -> optimiser.
    create: (module, params, tx) -> state; `make_state` by default.
    **init_kwargs: passed to every `module.init`.
  """
  if (tx is None) == (txs is None):
    raise TypeError("network_states takes exactly one of tx and txs")
  out = {}
  for m, module in modules.items():
    params = module.init(keys[m], zero_batch(dims, m), **init_kwargs)["params"]
    out[m] = create(module, params, tx if txs is None else txs[m])
  return out


def feature_mlps(config, *, tanh: bool, dims: Dims | None = None, source: str = "") -> dict:
  """The image and text MLP encoders on features: widths `config.image_hidden` / `config.text_hidden`,
  init `config.init`, K = `config.bits` outputs (tanh-squashed if `tanh`).

  With `dims` of pixels, the image net is `image_backbone(config, dims, source)` followed
  directly by the hash layer (the sources' fc7 -> hash; `image_hidden` is not used). With text
  token ids, the text net is `text_backbone(config, dims)` followed by the hash layer
  (`text_hidden` is not used).
  """
  nets = {m: MLPEncoder(bits=config.bits, hidden=tuple(getattr(config, f"{m}_hidden")), init_scheme=config.init,
                        tanh=tanh) for m in MODALITIES}
  backbone = None if dims is None else image_backbone(config, dims, source)
  if backbone is not None:
    nets["image"] = MLPEncoder(bits=config.bits, hidden=(), init_scheme=config.init, tanh=tanh, backbone=backbone)
  tower = None if dims is None else text_backbone(config, dims)
  if tower is not None:
    nets["text"] = MLPEncoder(bits=config.bits, hidden=(), init_scheme=config.init, tanh=tanh, backbone=tower)
  return nets


def encode(state, modality: str, x: jax.Array) -> jax.Array:
  """The `modality` network's real-valued outputs for `x`, for states with `nets[modality]`."""
  check_modality(modality)
  net = state.nets[modality]
  return net.apply_fn({"params": net.params}, x)


# --------------------------------------------------------------------------- pixel backbones


@dataclasses.dataclass(frozen=True)
class BackboneConfig(BaseConfig):
  """`BaseConfig` plus the fields of training on pixels, which every method shares.

  On image features ("auto" or "mlp") the image net is the method's feature MLP, exactly as
  before these fields existed. On pixels "auto" is the network the method's sources fine-tune
  (each method's `SOURCE_BACKBONE`), and any of `jxhash.nets.backbones.BACKBONES` can be set:
  the backbone's features feed the method's hash layers and the whole net trains end to end.

  The text side likewise: on text features ("auto" or "mlp") the text net is the method's MLP;
  on CLIP token ids (`Dims.text_tokens`) "auto" is CLIP's text tower (`backbones.TEXT_BACKBONES`),
  its projected embedding feeding the method's text hash layer, fine-tuned end to end with the
  same `backbone_lr_scale`. Its weights come from the CLIP file `text_backbone_weights`, which
  is `backbone_weights` unless set (one CLIP file for both towers).
  """

  CHOICES = {"backbone": ("auto", "mlp") + backbones.BACKBONES, "backbone_dtype": ("auto", "float32", "bfloat16"),
             "text_backbone": ("auto", "mlp") + backbones.TEXT_BACKBONES}

  backbone: str = "auto"  # pixels: the sources' network; features: the MLP ("mlp")
  backbone_weights: str = ""  # pretrained weights for the backbone (.mat / .pth / .pt); "": random init
  backbone_widths: tuple = ()  # (): the published network; smaller widths for tests (jxhash.nets.backbones)
  backbone_dtype: str = "auto"  # backbone computation: bfloat16 on GPUs/TPUs, float32 on CPUs
  backbone_lr_scale: float = 1.0  # the backbones' lr / the heads' (1: one lr for the whole net)
  text_backbone: str = "auto"  # token ids: CLIP's text tower; text features: the MLP ("mlp")
  text_backbone_widths: tuple = ()  # (): CLIP ViT-B/32's text tower; (width, layers, heads) for tests
  text_backbone_weights: str = ""  # the text tower's CLIP file; "": backbone_weights

  def __post_init__(self):
    for field in ("backbone_widths", "text_backbone_widths"):
      widths = getattr(self, field)
      # --set backbone_widths=4,8,8,8 arrives as strings (the default () has no item type)
      if isinstance(widths, tuple) and widths and all(isinstance(w, str) for w in widths):
        if not all(w.isdigit() for w in widths):
          raise UserError(f"{field}={widths!r}: expected positive integers, e.g. 4,8,8,8")
        object.__setattr__(self, field, tuple(int(w) for w in widths))
      if isinstance(getattr(self, field), tuple) and any(
          isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in getattr(self, field)):
        raise UserError(f"{field}={getattr(self, field)!r}: expected positive integers, e.g. 4,8,8,8")
    super().__post_init__()


def pixel_backbone(config, dims: Dims, source: str) -> str:
  """The backbone the image net runs: "" on features (the MLP), else a `backbones.BACKBONES` name.

  Args:
    config: a `BackboneConfig`.
    dims: the input sizes.
    source: the backbone of the method's sources (what "auto" means on pixels).
  """
  name = config.backbone
  if not dims.is_pixels:
    if name not in ("auto", "mlp"):
      raise UserError(f"backbone={name!r} trains on pixels, and this dataset has {dims.image_dim}-d image "
                      "features: leave backbone=auto (the feature MLP)")
    return ""
  if name == "mlp":
    raise UserError(f"backbone='mlp' takes image features, and this dataset has "
                    f"{'x'.join(map(str, dims.image_shape))} pixels: choose one of "
                    f"{', '.join(backbones.BACKBONES)} or leave backbone=auto ({source})")
  name = source if name == "auto" else name
  backbones.check_backbone(name, config.backbone_widths)
  return name


def backbone_dtype(config):
  """The backbone's computation dtype: "auto" is bfloat16 on accelerators, float32 on CPUs."""
  if config.backbone_dtype == "auto":
    return jnp.bfloat16 if jax.default_backend() != "cpu" else jnp.float32
  return jnp.dtype(config.backbone_dtype)


def image_backbone(config, dims: Dims, source: str, *, stages: bool = False):
  """The `BackboneFeatures` a method's image net puts first on pixels, or None on features."""
  name = pixel_backbone(config, dims, source)
  if not name:
    return None
  return backbones.BackboneFeatures(name, tuple(config.backbone_widths), backbone_dtype(config), stages=stages)


def text_backbone_name(config, dims: Dims) -> str:
  """The backbone the text net runs: "" on text features (the MLP), else a `backbones.TEXT_BACKBONES`
  name (token ids). A UserError when a text tower is asked for and the text is features, or the
  MLP for token ids."""
  name = getattr(config, "text_backbone", "auto")
  if not dims.text_tokens:
    if name not in ("auto", "mlp"):
      raise UserError(f"text_backbone={name!r} reads token ids, and this dataset's text is {dims.text_dim}-d features "
                      "(e.g. a bag-of-words): load its raw text as tokens (prepared: text=clip-tokens) or leave "
                      "text_backbone=auto (the text MLP)")
    return ""
  if name == "mlp":
    raise UserError(f"text_backbone='mlp' takes text features, and this dataset's text is {dims.text_dim} CLIP token "
                    f"ids: choose one of {', '.join(backbones.TEXT_BACKBONES)} or leave text_backbone=auto")
  name = backbones.TEXT_BACKBONES[0] if name == "auto" else name
  backbones.check_text_backbone(name, config.text_backbone_widths)
  return name


def text_backbone(config, dims: Dims, *, stages: bool = False):
  """The `TextBackboneFeatures` a method's text net puts first on token ids, or None on features."""
  name = text_backbone_name(config, dims)
  if not name:
    return None
  return backbones.TextBackboneFeatures(name, tuple(config.text_backbone_widths), backbone_dtype(config),
                                        stages=stages)


def require_text_features(method: str, dims: Dims, what: str) -> None:
  """A UserError if the text is token ids: `method` reads (N, T) text features (`what`)."""
  if dims.text_tokens:
    raise UserError(f"{method} reads text features ({what}), and this dataset's text is CLIP token ids: load its "
                    "text features (prepared: text=bow) or use a method with a text tower (text_backbone=...)")


def _grouped(tx: optax.GradientTransformation, config) -> optax.GradientTransformation:
  """`tx` for the head, `tx` scaled by `config.backbone_lr_scale` inside "backbone" modules, and
  nothing for the constants (`backbones.FIXED`)."""
  scaled = tx if config.backbone_lr_scale == 1.0 else optax.chain(tx, optax.scale(config.backbone_lr_scale))

  def labels(params):
    def label(path, _):
      if backbones.is_fixed(path):
        return "frozen"
      return "backbone" if backbones.in_backbone(path) else "head"
    return jax.tree_util.tree_map_with_path(label, params)

  return optax.multi_transform({"head": tx, "backbone": scaled, "frozen": optax.set_to_zero()}, labels)


def text_backbone_tx(tx: optax.GradientTransformation, config, dims: Dims) -> optax.GradientTransformation:
  """The text net's optimiser: `tx` unchanged on text features; with a text tower, grouped as
  `backbone_tx` groups the image net's (the tower's steps scaled by `backbone_lr_scale`)."""
  return _grouped(tx, config) if text_backbone_name(config, dims) else tx


def backbone_tx(tx: optax.GradientTransformation, config, dims: Dims, source: str) -> optax.GradientTransformation:
  """The image net's optimiser: `tx` unchanged on features; on pixels `tx` for the head, `tx`
  with its steps scaled by `config.backbone_lr_scale` for the backbone (for SGD and Adam alike
  a scaled step is a scaled lr), and no change at all to the backbone's constants
  (BatchNorm statistics, CNN-F's mean image: `backbones.FIXED`).

  The groups keep separate optimiser states, so a `tx` that clips the global gradient norm
  clips each group's norm.
  """
  if not pixel_backbone(config, dims, source):
    return tx
  return _grouped(tx, config)


def _replace_backbone(tree, load: Callable):
  """`tree` with each "backbone" module's "net" replaced by load(current net); (tree, count)."""
  if not isinstance(tree, Mapping):
    return tree, 0
  out, count = {}, 0
  for key, value in tree.items():
    if key == "backbone" and isinstance(value, Mapping) and "net" in value:
      out[key] = dict(value, net=load(value["net"]))
      count += 1
    else:
      out[key], found = _replace_backbone(value, load)
      count += found
  return out, count


def _image_size(name: str, net, widths) -> int:
  """The input side a backbone's parameters were built for (what its weights must match)."""
  if name == "cnn-f":
    return int(net["params"]["mean_image"].shape[-3])
  if name == "clip-vit-b32" and widths:
    grid = int(round((net["params"]["positional_embedding"].shape[-2] - 1) ** 0.5))
    return grid * int(widths[3])
  return 224


def backbone_warm_start(state, config, *, source: str, net: str = "image", text_net: str = "text"):
  """`state` with the image backbone's weights read from `config.backbone_weights`, and the text
  tower's (if the text net has one) from `config.text_backbone_weights`, else from the same file.

  A spec's `warm_start`: the state has a leading seed axis, and every seed starts from the same
  pretrained weights; the hash heads keep their initialisation. A no-op without weights files.
  """
  path = config.backbone_weights
  text_path = getattr(config, "text_backbone_weights", "") or path
  name = source if config.backbone == "auto" else config.backbone
  widths = tuple(config.backbone_widths)
  image, text = state.nets[net], state.nets.get(text_net)
  on_pixels = _replace_backbone(image.params, lambda n: n)[1] > 0
  tower = text is not None and _replace_backbone(text.params, lambda n: n)[1] > 0
  if tower and text_path:
    if text_path == path and on_pixels and name != "clip-vit-b32":
      raise UserError(f"backbone_weights={path!r} initialises the {name} image backbone, and the CLIP text tower "
                      "reads a CLIP file: give that as text_backbone_weights")
    kind = backbones.TEXT_BACKBONES[0] if config.text_backbone in ("auto", "mlp") else config.text_backbone
    text_widths = tuple(config.text_backbone_widths)

    def load_text(current):
      return backbones.place(current, backbones.load_text_backbone(kind, text_path, widths=text_widths), text_path)

    params, _ = _replace_backbone(text.params, load_text)
    state = state.replace(nets=dict(state.nets, **{text_net: text.replace(params=params)}))
  if not path or (tower and text_path == path and not on_pixels):
    return state  # no image weights, or the file was the text tower's (image features: the MLP)
  if not on_pixels:
    raise UserError(f"backbone_weights={path!r} initialises an image backbone on pixels, and this run's image net "
                    "has none (the dataset has image features)")

  def load(current):
    loaded = backbones.load_backbone(name, path, widths=widths, image_size=_image_size(name, current, widths))
    return backbones.place(current, loaded, path)

  params, _ = _replace_backbone(image.params, load)
  return state.replace(nets=dict(state.nets, **{net: image.replace(params=params)}))


# --------------------------------------------------------------------------- buffers and codes


def sign_of_sum(*outputs: jax.Array) -> jax.Array:
  """binarize(o_1 + o_2 + ...), summed left to right: B = sign(F + G) and its variants."""
  return binarize(functools.reduce(lambda a, b: a + b, outputs))


def random_buffers(key: jax.Array, names, *, num_train: int, bits: int, kind: str = "normal") -> dict:
  """Initial output buffers, one (n, K) per name, drawn together.

  kind: "normal" (N(0, 1), DCMH's TF code), "zeros" (DCMH's MATLAB code) or "uniform"
  (U(-1, 1), the range of tanh outputs).
  """
  names = tuple(names)
  shape = (len(names), num_train, bits)
  if kind == "normal":
    buf = jax.random.normal(key, shape)
  elif kind == "zeros":
    buf = jnp.zeros(shape)
  elif kind == "uniform":
    buf = jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
  else:
    raise UserError(f"unknown buffer_init {kind!r}; choose 'normal' or 'zeros'")
  return dict(zip(names, buf))


def with_outputs(state, name: str, net, index: jax.Array, out: jax.Array):
  """`state` with network `name` replaced by `net` and rows `index` of its buffer set to `out`."""
  outputs = dict(state.outputs, **{name: state.outputs[name].at[index].set(out)})
  return state.replace(nets=dict(state.nets, **{name: net}), outputs=outputs)


def apply_network(net, params, *inputs):
  """(outputs, None): a network's forward pass, with no extra outputs."""
  return net.apply_fn({"params": params}, *inputs), None


def gradient_update(net, grads):
  """A TrainState's optimiser update."""
  return net.apply_gradients(grads=grads)


def network_step(name: str, objective: Callable, *, context: Callable | None = None,
                 inputs: Callable | None = None, forward: Callable = apply_network,
                 update: Callable = gradient_update) -> Callable:
  """A phase step that updates network `name` on its batch and writes its outputs into its buffer.

  The step computes `ctx = context(state, batch, data, key)` (targets, similarities: anything
  that does not depend on the network's parameters), runs the network on `inputs(batch, ctx)`
  (default: `(batch[name],)`), differentiates `objective` with respect to the parameters,
  updates the network and stores its outputs in `state.outputs[name]` at the batch rows.

  Args:
    name: the network ("image", "text", "label", ...).
    objective: (outputs, extras, state, batch, ctx) -> (loss, logs dict).
    context: (state, batch, data, key) -> ctx; None gives ctx = None.
    inputs: (batch, ctx) -> tuple of network inputs.
    forward: (net, params, *inputs) -> (outputs (bs, K), extras); `apply_network` by default.
    update: (net, grads) -> net; `gradient_update` by default.

  Returns:
    step(state, batch, data, key) -> (state, {"loss": loss, **logs}).
  """

  def step(state, batch: dict, data: dict, key: jax.Array):
    ctx = None if context is None else context(state, batch, data, key)
    net = state.nets[name]
    x = (batch[name],) if inputs is None else inputs(batch, ctx)

    def loss_fn(params):
      out, extras = forward(net, params, *x)
      loss, logs = objective(out, extras, state, batch, ctx)
      return loss, (out, logs)

    (loss, (out, logs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    return with_outputs(state, name, update(net, grads), batch["index"], out), {"loss": loss, **logs}

  return step


def label_context(state, batch: dict, data: dict, key: jax.Array) -> jax.Array:
  """S_ij = 1[l_i · l_j > 0] between the batch and every training item: (bs, n)."""
  del state, key
  return losses.label_similarity(batch["labels"], data["labels"])


def refresh_codes(names=MODALITIES) -> Callable:
  """An end-of-epoch function: codes = sign(sum of the `names` buffers) (DCMH's B-step)."""

  def refresh(state, data: dict):
    del data
    return state.replace(codes=sign_of_sum(*(state.outputs[n] for n in names)))

  return refresh
