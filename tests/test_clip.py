"""CLIP: the Flax towers, importer, tokenizer and preprocessing against open_clip in the same process.

open_clip (open-clip-torch, a test dependency) is the reference: models built with its own
random initialisation, their `state_dict()` imported by `load_clip`, the embeddings compared in
float32 (relative error per row ≤ 1e-5). Small models (2 layers, width 128, two heads) at two
image/patch sizes keep the quick tier quick; the full ViT-B/32 comparison is one slow test.
"""

import copy
import functools
import math
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import clip_reference

from jxhash.errors import UserError
from jxhash.nets import clip, clip_tokenizer
from jxhash.nets.clip import (VIT_B_16, VIT_B_32, VIT_L_14, ClipConfig, config_from_state_dict, encode_image,
                              encode_text, load_clip, preprocess_image, tokenize)

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

pytestmark = pytest.mark.usefixtures("strict_promotion")

TOLERANCE = 1e-5

TEXTS = [
  "a photo of a cat.",
  "",
  "   Two   dogs\tplaying\n in the SNOW!!  ",
  "Don't stop: it's 3.14159 o'clock, we've 42 apples & 7 pears (approx.) -- ok?",
  "HTML: &amp;amp; &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;x&#39;",
  "naïve café résumé Ünïcödé façade — “curly quotes” … ellipsis",
  "emoji 🙂👍🏽🇫🇷 and symbols ©®™ ½ ∞ →",
  "日本語のテキストと中文文本 и русский текст, ελληνικά",
  "mojibake: The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.",
  "<start_of_text> spelled out <end_of_text> inside",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa antidisestablishmentarianism pneumonoultramicroscopic",
  "word " * 100,
  "1234567890" * 10,
]


def rel_error(ours, ref) -> float:
  """Largest per-row relative error ||ours - ref|| / ||ref||."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return float((np.linalg.norm(ours - ref, axis=-1) / np.linalg.norm(ref, axis=-1)).max())


def state_dict_numpy(model) -> dict:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@functools.lru_cache(maxsize=None)
def small_model(image_size: int, patch_size: int, quick_gelu: bool = True, seed: int = 0):
  """An open_clip CLIP with 2-layer towers of width 128 (two heads), randomly initialised."""
  torch.set_num_threads(1)
  return clip_reference.tiny_clip(width=128, image_size=image_size, patch_size=patch_size, vision_layers=2,
                                  text_layers=2, quick_gelu=quick_gelu, seed=seed)


def reference(model, pixels: np.ndarray = None, tokens: np.ndarray = None):
  with torch.no_grad():
    if pixels is not None:
      return model.encode_image(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).numpy()
    return model.encode_text(torch.from_numpy(tokens.astype(np.int64))).numpy()


def random_pixels(n: int, size: int, seed: int) -> np.ndarray:
  # Preprocessed pixels span roughly [-1.8, 2.2]; scale 1 normal values are of that size.
  return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


def random_image(width: int, height: int, mode: str, seed: int):
  from PIL import Image
  rng = np.random.default_rng(seed)
  # Smooth content plus noise: resampling filters see both edges and gradients.
  yy, xx = np.mgrid[0:height, 0:width]
  base = 127 + 100 * np.sin(xx[..., None] / 7.0 + np.arange(4) + yy[..., None] / 11.0)
  pixels = np.clip(base + rng.normal(0, 30, (height, width, 4)), 0, 255).astype(np.uint8)
  img = Image.fromarray(pixels, "RGBA")
  return img if mode == "RGBA" else img.convert(mode)


# ---------------------------------------------------------------------------------------------
# Tokenizer.


def test_tokenize_matches_open_clip():
  ours = tokenize(TEXTS)
  assert ours.dtype == np.int32 and ours.shape == (len(TEXTS), 77)
  np.testing.assert_array_equal(ours, open_clip.tokenize(TEXTS).numpy())
  reference_tokenizer = open_clip.tokenizer.SimpleTokenizer()
  ours_tokenizer = clip_tokenizer.get_tokenizer()
  for text in TEXTS:
    assert ours_tokenizer.encode(text) == reference_tokenizer.encode(text), text
  # The cases are varied enough to matter: truncation happened, and padding, and long words split.
  assert (ours[:, -1] == 49407).sum() >= 2 and (ours[:, -1] == 0).sum() >= 2


@pytest.mark.parametrize("context_length", [2, 5, 16])
def test_tokenize_truncation_keeps_end_of_text(context_length):
  ours = tokenize(TEXTS, context_length=context_length)
  np.testing.assert_array_equal(ours, open_clip.tokenize(TEXTS, context_length=context_length).numpy())
  long_rows = [i for i, t in enumerate(TEXTS) if len(clip_tokenizer.get_tokenizer().encode(t)) + 2 > context_length]
  assert long_rows and all(ours[i, -1] == 49407 for i in long_rows)


def test_tokenizer_vocabulary_and_decode():
  tok = clip_tokenizer.get_tokenizer()
  reference_tokenizer = open_clip.tokenizer.SimpleTokenizer()
  assert tok.vocab_size == 49408 and (tok.sot_id, tok.eot_id) == (49406, 49407)
  assert tok.encoder == reference_tokenizer.encoder
  assert clip_tokenizer.byte_characters() == tuple(open_clip.tokenizer.bytes_to_unicode()[b] for b in range(256))
  ids = tok.encode("a photo of 2 cats, naïve")
  assert tok.decode(ids) == reference_tokenizer.decode(ids) == "a photo of 2 cats , naïve "


def test_tokenizer_vocab_file_errors(tmp_path, monkeypatch):
  with pytest.raises(UserError, match="does not exist") as e:
    clip_tokenizer.ClipTokenizer(vocab=tmp_path / "missing.txt.gz")
  assert "\n" not in str(e.value)
  bad = tmp_path / "bad.txt.gz"
  bad.write_bytes(b"not gzip")
  with pytest.raises(UserError, match="unreadable"):
    clip_tokenizer.ClipTokenizer(vocab=bad)
  # Without ftfy or regex: one line naming the extra.
  monkeypatch.setitem(sys.modules, "ftfy", None)
  _one_line_error(clip_tokenizer.ClipTokenizer, match=r"needs the ftfy package: pip install 'jxhash\[clip\]'")
  monkeypatch.delitem(sys.modules, "ftfy")
  # Neither open_clip nor clip installed: one line saying how to get the file.
  monkeypatch.setattr(clip_tokenizer.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(UserError, match="pip install open-clip-torch") as e:
    clip_tokenizer.find_vocab()
  assert "\n" not in str(e.value)


@pytest.mark.slow
def test_vocab_found_without_importing_torch(tmp_path):
  import subprocess
  code = ("import sys; from jxhash.nets.clip import tokenize; t = tokenize(['hi there']);"
          "assert t[0, :4].tolist() == [49406, 1883, 997, 49407], t[0, :4];"
          "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, 'imported torch'")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


# ---------------------------------------------------------------------------------------------
# Preprocessing.


@pytest.mark.parametrize("width,height,mode", [(224, 224, "RGB"), (300, 200, "RGB"), (200, 301, "RGB"),
                                               (225, 224, "RGB"), (97, 333, "L"), (640, 481, "RGBA"),
                                               (50, 40, "RGB"), (3, 700, "RGB"), (250, 250, "P")])
def test_preprocess_matches_open_clip(width, height, mode):
  img = random_image(width, height, mode, seed=width * height)
  ours = preprocess_image(img)
  ref = open_clip.image_transform(224, is_train=False)(img).numpy().transpose(1, 2, 0)
  assert ours.dtype == np.float32 and ours.shape == (224, 224, 3)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
  assert ours.std() > 0.1  # the image is not blank


def test_preprocess_other_size():
  img = random_image(90, 61, "RGB", seed=3)
  ref = open_clip.image_transform(32, is_train=False)(img).numpy().transpose(1, 2, 0)
  np.testing.assert_allclose(preprocess_image(img, image_size=32), ref, rtol=0, atol=1e-6)
  with pytest.raises(UserError, match="PIL image"):
    preprocess_image(np.zeros((4, 4, 3)))


# ---------------------------------------------------------------------------------------------
# Networks against open_clip.


@pytest.mark.parametrize("image_size,patch_size", [(32, 8), (48, 16)])
@pytest.mark.parametrize("batch", [1, 3])
def test_small_model_matches_open_clip(image_size, patch_size, batch):
  model = small_model(image_size, patch_size)
  params, cfg = load_clip(state_dict_numpy(model))
  assert cfg == ClipConfig(embed_dim=32, image_size=image_size, patch_size=patch_size, vision_width=128,
                           vision_layers=2, vision_heads=2, text_width=128, text_layers=2, text_heads=2)
  pixels = random_pixels(batch, image_size, seed=batch)
  ours = encode_image(params, cfg, pixels)
  assert ours.shape == (batch, 32) and ours.dtype == jnp.float32
  assert rel_error(ours, reference(model, pixels=pixels)) <= TOLERANCE
  tokens = tokenize([TEXTS[11], TEXTS[3], TEXTS[6]][:batch])  # the first is truncated
  ours = encode_text(params, cfg, tokens)
  assert ours.shape == (batch, 32)
  assert rel_error(ours, reference(model, tokens=tokens)) <= TOLERANCE


def test_gelu_model_and_short_tokens():
  """open_clip's models without "-quickgelu" use the exact GELU; trailing padding may be cut off."""
  model = small_model(32, 8, quick_gelu=False, seed=1)
  sd = state_dict_numpy(model)
  params, cfg = load_clip(sd, quick_gelu=False)
  pixels = random_pixels(2, 32, seed=5)
  tokens = tokenize(TEXTS[:4])
  image_ref, text_ref = reference(model, pixels=pixels), reference(model, tokens=tokens)
  assert rel_error(encode_image(params, cfg, pixels), image_ref) <= TOLERANCE
  assert rel_error(encode_text(params, cfg, tokens), text_ref) <= TOLERANCE
  short = tokens[:, :int(tokens.argmax(axis=1).max()) + 1]
  assert short.shape[1] < 77
  assert rel_error(encode_text(params, cfg, short), text_ref) <= TOLERANCE
  # The activation matters: QuickGELU on GELU-trained weights is measurably off.
  quick_params, quick_cfg = load_clip(sd)
  assert rel_error(encode_image(quick_params, quick_cfg, pixels), image_ref) > 100 * TOLERANCE


def test_bfloat16_compute_is_close():
  model = small_model(32, 8)
  params, cfg = load_clip(state_dict_numpy(model))
  pixels = random_pixels(2, 32, seed=7)
  assert rel_error(encode_image(params, cfg, pixels, dtype=jnp.bfloat16), reference(model, pixels=pixels)) < 3e-2


def test_towers_as_modules_and_param_tree():
  """CLIPImageTower / CLIPTextTower init the same tree load_clip fills, and apply like encode_*."""
  model = small_model(32, 8)
  params, cfg = load_clip(state_dict_numpy(model))
  init = jax.eval_shape(lambda: clip.init_clip(jax.random.key(0), cfg))
  shapes = lambda tree: jax.tree_util.tree_map(lambda x: tuple(x.shape), tree)  # noqa: E731
  assert shapes(init) == shapes(params)
  pixels = random_pixels(2, 32, seed=9)
  out = jax.jit(clip.CLIPImageTower(cfg).apply)({"params": params["visual"]}, jnp.asarray(pixels))
  np.testing.assert_allclose(out, encode_image(params, cfg, pixels), rtol=1e-6, atol=1e-6)
  tokens = jnp.asarray(tokenize(["a cat"]))
  out = jax.jit(clip.CLIPTextTower(cfg).apply)({"params": params["text"]}, tokens)
  np.testing.assert_allclose(out, encode_text(params, cfg, tokens), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(params["logit_scale"], model.logit_scale.item(), rtol=1e-7)


def _shape_only_state_dict(cfg: ClipConfig) -> dict:
  # Zero-stride views: the full-size models' tables without allocating their weights.
  sd = {key: np.broadcast_to(np.float32(0), shape) for key, _, shape, _ in clip.weight_table(cfg)}
  sd.update(input_resolution=np.int64(cfg.image_size), context_length=np.int64(77), vocab_size=np.int64(49408))
  return sd


@pytest.mark.parametrize("cfg", [VIT_B_32, VIT_B_16, VIT_L_14], ids=["B32", "B16", "L14"])
def test_config_from_state_dict_named_models(cfg):
  sd = _shape_only_state_dict(cfg)
  assert config_from_state_dict(sd) == cfg
  # OpenAI's extra TorchScript entries are dropped, not "unexpected".
  assert set(clip.read_clip_state_dict(sd)[0]) == {key for key, *_ in clip.weight_table(cfg)}


def test_named_configs_match_open_clip():
  """The named configs are open_clip's ViT-B-32 / B-16 / L-14 (embed, widths, layers, heads)."""
  for name, cfg in [("ViT-B-32", VIT_B_32), ("ViT-B-16", VIT_B_16), ("ViT-L-14", VIT_L_14)]:
    mc = open_clip.get_model_config(name)
    vision, text = mc["vision_cfg"], mc["text_cfg"]
    assert (mc["embed_dim"], vision["image_size"], vision["patch_size"], vision["width"], vision["layers"]) == \
        (cfg.embed_dim, cfg.image_size, cfg.patch_size, cfg.vision_width, cfg.vision_layers), name
    assert vision["width"] // vision.get("head_width", 64) == cfg.vision_heads, name
    assert (text["width"], text["heads"], text["layers"], text["context_length"], text["vocab_size"]) == \
        (cfg.text_width, cfg.text_heads, cfg.text_layers, cfg.context_length, cfg.vocab_size), name


# ---------------------------------------------------------------------------------------------
# Files (read by jxhash.nets.torch_io).


def test_load_from_torch_and_safetensors_files(tmp_path):
  pytest.importorskip("jxhash.nets.torch_io")
  safetensors_torch = pytest.importorskip("safetensors.torch")
  model = small_model(32, 8)
  expected, cfg = load_clip(state_dict_numpy(model))
  torch.save(model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
  safetensors_torch.save_file(model.state_dict(), str(tmp_path / "open_clip_model.safetensors"))
  # A half-precision file, as OpenAI's releases are: widened to float32 on import.
  torch.save({k: v.half() for k, v in model.state_dict().items()}, tmp_path / "half.pt")
  safetensors_torch.save_file({k: v.bfloat16() for k, v in model.state_dict().items()}, str(tmp_path / "bf16.safetensors"))
  # A TorchScript archive like OpenAI's ViT-B-32.pt (a traced model, float16); it also carries the
  # text tower's causal mask as a buffer, which the importer drops.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the tracer's notes, and torch.jit's deprecation
    traced = torch.jit.trace_module(copy.deepcopy(model), {"encode_image": torch.zeros(1, 3, 32, 32),
                                                           "encode_text": torch.zeros(1, 77, dtype=torch.long)},
                                    check_trace=False)
    torch.jit.save(traced.half(), str(tmp_path / "ViT-tiny.pt"))  # torch 2.14 deprecates torch.jit
  # An open_clip training checkpoint: the weights under "state_dict", saved from DistributedDataParallel.
  torch.save({"epoch": 3, "name": "run", "state_dict": {"module." + k: v for k, v in model.state_dict().items()}},
             tmp_path / "epoch_3.pt")
  for name in ("open_clip_pytorch_model.bin", "open_clip_model.safetensors", "half.pt", "ViT-tiny.pt", "epoch_3.pt",
               "bf16.safetensors"):
    params, file_cfg = load_clip(tmp_path / name)
    assert file_cfg == cfg
    leaves = jax.tree_util.tree_leaves(params)
    assert all(leaf.dtype == np.float32 for leaf in leaves)
    tol = {"half.pt": 1e-3, "ViT-tiny.pt": 1e-3, "bf16.safetensors": 1e-2}.get(name, 0)
    for ours, ref in zip(leaves, jax.tree_util.tree_leaves(expected)):
      np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------
# Errors: one line, naming the key or shape at fault.


def _one_line_error(fn, *args, match, **kwargs):
  with pytest.raises(UserError, match=match) as e:
    fn(*args, **kwargs)
  assert "\n" not in str(e.value)
  return str(e.value)


def test_importer_errors(tmp_path):
  sd = state_dict_numpy(small_model(32, 8))
  missing = {k: v for k, v in sd.items() if k != "visual.transformer.resblocks.1.mlp.c_fc.bias"}
  _one_line_error(load_clip, missing, match=r"missing key 'visual\.transformer\.resblocks\.1\.mlp\.c_fc\.bias'")
  extra = dict(sd, **{"visual.transformer.resblocks.0.ls_1.gamma": np.ones(128, np.float32)})
  _one_line_error(load_clip, extra, match=r"unexpected key 'visual\.transformer\.resblocks\.0\.ls_1\.gamma'")
  wrong = dict(sd, **{"ln_final.bias": np.zeros(64, np.float32)})
  _one_line_error(load_clip, wrong, match=r"ln_final\.bias has shape \(64,\), expected \(128,\)")
  # A config given explicitly that the file does not fit.
  _one_line_error(load_clip, sd, VIT_B_32, match=r"visual\.class_embedding has shape \(128,\), expected \(768,\)")
  resnet = {"visual.layer1.0.conv1.weight": np.zeros((64, 64, 1, 1), np.float32), "text_projection": np.zeros((2, 2))}
  _one_line_error(load_clip, resnet, match="ResNet")
  _one_line_error(load_clip, {"foo": np.zeros(3)}, match="no key 'visual.conv1.weight'")
  _one_line_error(load_clip, tmp_path / "absent.pt", match="absent.pt does not exist")
  # DataParallel's "module." prefix is not an error.
  assert load_clip({"module." + k: v for k, v in sd.items()})[1] == load_clip(sd)[1]


def test_encode_input_errors():
  params, cfg = load_clip(state_dict_numpy(small_model(32, 8)))
  _one_line_error(encode_image, params, cfg, np.zeros((1, 48, 48, 3), np.float32), match=r"\(N, 32, 32, 3\)")
  _one_line_error(encode_image, params, cfg, np.zeros((32, 32, 3), np.float32), match=r"got \(32, 32, 3\)")
  _one_line_error(encode_text, params, cfg, np.zeros((1, 78), np.int32), match="L <= 77")
  _one_line_error(encode_text, params, cfg, np.full((1, 5), 49408), match=r"\[0, 49408\)")
  _one_line_error(encode_text, params, cfg, np.zeros((1, 5), np.float32), match="integer")
  _one_line_error(ClipConfig, image_size=225, match="not a multiple of patch_size")
  _one_line_error(ClipConfig, vision_width=100, vision_heads=3, match="vision_width 100")


# ---------------------------------------------------------------------------------------------
# The full model.


@pytest.mark.slow
def test_vit_b_32_matches_open_clip():
  torch.set_num_threads(1)
  torch.manual_seed(0)
  model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
  params, cfg = load_clip(state_dict_numpy(model))
  assert cfg == VIT_B_32
  images = [random_image(w, h, "RGB", seed=w) for w, h in [(320, 240), (200, 260)]]
  pixels = np.stack([preprocess_image(img) for img in images])
  transform = open_clip.image_transform(224, is_train=False)
  with torch.no_grad():
    image_ref = model.encode_image(torch.stack([transform(img) for img in images])).numpy()
  tokens = tokenize(TEXTS[:3])
  assert rel_error(encode_image(params, cfg, pixels), image_ref) <= TOLERANCE
  assert rel_error(encode_text(params, cfg, tokens), reference(model, tokens=tokens)) <= TOLERANCE
  assert math.isclose(float(params["logit_scale"]), model.logit_scale.item(), rel_tol=1e-7)
