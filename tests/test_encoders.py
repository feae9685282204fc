"""AlexNet and ResNet-18/34 against torchvision, through files torch writes; preprocessing likewise.

The acceptance bar of the ports: torchvision's model with seeded random weights (and randomised
BatchNorm statistics), saved with torch.save, read with the importers, run on the same inputs at
several sizes and batch sizes; outputs agree to a relative error of 1e-5 in float32. The
preprocessing must equal torchvision.transforms' output on the same PIL images.
"""

import numpy as np
import pytest

from jxhash.errors import UserError
from jxhash.nets.alexnet import AlexNet, load_alexnet
from jxhash.nets.imagenet import _pool_matrix, adaptive_avg_pool
from jxhash.nets.transforms import imagenet, open_image
from jxhash.nets.resnet import ResNet, load_resnet

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

RTOL = 1e-5


def _close(got, want):
  """relative error <= 1e-5, with an absolute floor of 1e-5 of the output's magnitude."""
  want = np.asarray(want)
  np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=RTOL * float(np.abs(want).max()))


def _inputs(batch, size, seed=0):
  x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
  return x, x.permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
  torch.manual_seed(0)
  model = torchvision.models.alexnet(weights=None).eval()
  path = tmp_path_factory.mktemp("alexnet") / "alexnet.pth"
  torch.save(model.state_dict(), path)
  return model, path


def _randomise_batch_norm(model, seed):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
        m.num_batches_tracked.fill_(100)


def _resnet_file(tmp_path_factory, depth):
  torch.manual_seed(depth)
  model = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
  _randomise_batch_norm(model, depth)
  path = tmp_path_factory.mktemp("resnet") / f"resnet{depth}.pth"
  torch.save(model.state_dict(), path)
  return model, path


@pytest.fixture(scope="module")
def resnet34_file(tmp_path_factory):
  return _resnet_file(tmp_path_factory, 34)


@pytest.fixture(autouse=True)
def _one_thread():
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# AlexNet


@pytest.mark.slow
@pytest.mark.parametrize("batch,size", [(1, 224), (3, 193), (1, 257)])
def test_alexnet_matches_torchvision(alexnet_file, batch, size):
  model, path = alexnet_file
  params = load_alexnet(path)
  x, x_nhwc = _inputs(batch, size)
  with torch.no_grad():
    logits = model(x).numpy()
    fc7 = model.classifier[:6](torch.flatten(model.avgpool(model.features(x)), 1)).numpy()
  _close(AlexNet().apply({"params": params}, x_nhwc), logits)
  features = np.asarray(AlexNet(features_only=True).apply({"params": params}, x_nhwc))
  assert features.shape == (batch, 4096) and features.min() >= 0  # after fc7's ReLU
  _close(features, fc7)


@pytest.mark.slow
def test_alexnet_dropout_only_in_training(alexnet_file):
  import jax
  params = load_alexnet(alexnet_file[1])
  _, x = _inputs(2, 71)
  net = AlexNet(features_only=True)
  eval_a = net.apply({"params": params}, x)
  eval_b = net.apply({"params": params}, x, deterministic=True)
  np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))
  train = net.apply({"params": params}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
  assert not np.allclose(np.asarray(train), np.asarray(eval_a))


@pytest.mark.parametrize("size_in,size_out", [(6, 6), (13, 6), (5, 6), (7, 3), (1, 6), (17, 5)])
def test_adaptive_pool_matches_torch(size_in, size_out):
  x = torch.randn(2, 3, size_in, size_in + 2, generator=torch.Generator().manual_seed(size_in))
  want = torch.nn.functional.adaptive_avg_pool2d(x, (size_out, size_out)).permute(0, 2, 3, 1).numpy()
  got = adaptive_avg_pool(x.permute(0, 2, 3, 1).numpy(), (size_out, size_out))
  _close(got, want)
  assert np.allclose(_pool_matrix(size_in, size_out).sum(axis=1), 1.0)


# ---------------------------------------------------------------------------------------------
# ResNet


@pytest.mark.slow
@pytest.mark.parametrize("batch,size", [(1, 224), (3, 193)])
def test_resnet34_matches_torchvision(resnet34_file, batch, size):
  model, path = resnet34_file
  variables = load_resnet(path, 34)
  x, x_nhwc = _inputs(batch, size, seed=1)
  stages = []
  hooks = [getattr(model, f"layer{i}").register_forward_hook(lambda m, a, out: stages.append(out.mean((2, 3))))
           for i in range(1, 5)]
  with torch.no_grad():
    logits = model(x).numpy()
  for hook in hooks:
    hook.remove()
  _close(ResNet(34).apply(variables, x_nhwc), logits)
  pooled, got_stages = ResNet(34, features_only=True).apply(variables, x_nhwc, return_stages=True)
  assert pooled.shape == (batch, 512)
  _close(pooled, stages[-1].numpy())
  for got, want in zip(got_stages, stages):
    _close(got, want.numpy())


@pytest.mark.slow
def test_resnet18_by_config(tmp_path_factory):
  model, path = _resnet_file(tmp_path_factory, 18)
  variables = load_resnet(path, depth=18)
  x, x_nhwc = _inputs(2, 160, seed=2)
  with torch.no_grad():
    want = model(x).numpy()
  _close(ResNet(18).apply(variables, x_nhwc), want)


@pytest.mark.slow
def test_resnet_train_mode_uses_batch_statistics():
  import jax
  import jax.numpy as jnp
  net = ResNet(18, features_only=True)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 64, 3))
  variables = net.init(jax.random.PRNGKey(1), x)
  out, updated = net.apply(variables, x, train=True, mutable=["batch_stats"])
  assert out.shape == (2, 512)
  before = variables["batch_stats"]["bn1"]["mean"]
  after = updated["batch_stats"]["bn1"]["mean"]
  assert not jnp.allclose(before, after)  # the running mean moved toward the batch's


# ---------------------------------------------------------------------------------------------
# Importer refusals


def test_importer_mismatch_is_one_line(tmp_path):
  torch.manual_seed(0)
  resnet18 = torchvision.models.resnet18(weights=None).state_dict()
  path = tmp_path / "r18.pth"
  torch.save(resnet18, path)
  with pytest.raises(UserError, match=r"no 'layer1.2.conv1.weight'") as e:
    load_resnet(path, 34)
  assert "\n" not in str(e.value) and str(path) in str(e.value)
  state = {k: v.numpy() for k, v in resnet18.items()}
  state["fc.weight"] = state["fc.weight"][:10]
  with pytest.raises(UserError, match=r"'fc.weight' has shape \(10, 512\)"):
    load_resnet(state, 18)
  state = {k: v.numpy() for k, v in resnet18.items()}
  state["extra.weight"] = np.zeros(3)
  with pytest.raises(UserError, match="unexpected entry 'extra.weight'"):
    load_resnet(state, 18)
  with pytest.raises(UserError, match="no 'features.0.weight'"):
    load_alexnet(path)
  with pytest.raises(UserError, match="depth must be one of"):
    load_resnet(path, 50)


def test_torchvision_name_hash_is_checked(tmp_path):
  import hashlib
  torch.manual_seed(0)
  state = torchvision.models.resnet18(weights=None).state_dict()
  path = tmp_path / "resnet18.pth"
  torch.save(state, path)
  digest = hashlib.sha256(path.read_bytes()).hexdigest()
  good = tmp_path / f"resnet18-{digest[:8]}.pth"
  path.rename(good)
  np.testing.assert_array_equal(load_resnet(good, 18)["params"]["fc"]["bias"], state["fc.bias"].numpy())
  bad = tmp_path / f"resnet18-{'0' if digest[0] != '0' else '1'}{digest[1:8]}.pth"
  good.rename(bad)
  with pytest.raises(UserError, match="sha256"):
    load_resnet(bad, 18)
  load_resnet(bad, 18, check_hash=False)
  # only torchvision's own names carry a hash: a date in a user's file name is not one
  dated = tmp_path / "finetuned-20240101.pth"
  bad.rename(dated)
  load_resnet(dated, 18)


# ---------------------------------------------------------------------------------------------
# Preprocessing


@pytest.mark.parametrize("height,width,fmt", [(300, 451, "PNG"), (257, 256, "JPEG"), (100, 77, "PNG"),
                                              (256, 256, "JPEG"), (613, 240, "PNG"), (31, 500, "JPEG")])
def test_imagenet_preprocessing_matches_torchvision(tmp_path, height, width, fmt):
  from PIL import Image
  from torchvision import transforms
  rng = np.random.default_rng(height * width)
  path = tmp_path / f"img.{fmt.lower()}"
  Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, fmt)
  reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                  transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
  with Image.open(path) as image:
    want = reference(image.convert("RGB")).permute(1, 2, 0).numpy()
  got = imagenet(open_image(path))
  assert got.shape == (224, 224, 3) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_grey_and_rgba_images_become_rgb(tmp_path):
  from PIL import Image
  grey = tmp_path / "grey.png"
  Image.fromarray(np.full((40, 50), 128, np.uint8), "L").save(grey)
  rgba = tmp_path / "rgba.png"
  Image.fromarray(np.full((40, 50, 4), 200, np.uint8), "RGBA").save(rgba)
  for path in (grey, rgba):
    assert imagenet(open_image(path)).shape == (224, 224, 3)


def test_corrupt_image_is_one_line(tmp_path):
  from PIL import Image
  good = tmp_path / "good.jpg"
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(good)
  cut = tmp_path / "cut.jpg"
  cut.write_bytes(good.read_bytes()[:200])
  text = tmp_path / "notes.png"
  text.write_text("not an image")
  for path in (cut, text, tmp_path / "missing.png"):
    with pytest.raises(UserError, match="cannot read image") as e:
      open_image(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
