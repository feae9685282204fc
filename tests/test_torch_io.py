"""jxhash.nets.torch_io against real PyTorch: every file format read back exactly, hostile files refused.

torch writes the files; the reader never imports it. Each test compares every entry's dtype,
shape and values with what torch itself loads.
"""

import pickle
import warnings
import zipfile

import ml_dtypes
import numpy as np
import pytest

from jxhash.errors import UserError
from jxhash.nets.torch_io import read_state_dict

torch = pytest.importorskip("torch")


def _numpy(tensor):
  tensor = tensor.detach()
  if tensor.dtype == torch.bfloat16:
    return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return tensor.numpy()


def _assert_same(got: dict, want: dict):
  assert list(got) == list(want)
  for name, tensor in want.items():
    ref = _numpy(tensor)
    assert got[name].dtype == ref.dtype, name
    assert got[name].shape == ref.shape, name
    # bit-exact: compare the raw bytes (NaN-safe, bfloat16-safe)
    assert np.ascontiguousarray(got[name]).tobytes() == np.ascontiguousarray(ref).tobytes(), name


def _state_dict():
  g = torch.Generator().manual_seed(0)
  base = torch.randn(6, 8, generator=g)
  return {
      "conv.weight": torch.randn(4, 3, 2, 2, generator=g),
      "half": torch.randn(5, generator=g).half(),
      "bf16": torch.randn(2, 3, generator=g).bfloat16(),
      "double": torch.randn(3, generator=g).double(),
      "steps": torch.tensor(7),  # 0-d int64, as BatchNorm's num_batches_tracked
      "ints": torch.arange(10, dtype=torch.int32),
      "mask": torch.tensor([True, False, True]),
      "transposed": base.t(),  # non-contiguous strides
      "strided": base[1:5, ::3],  # offset and step into a shared storage
      "shared": base,
      "empty": torch.zeros(0, 4),
  }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_save_round_trip(tmp_path, legacy):
  state = _state_dict()
  path = tmp_path / "w.pth"
  torch.save(state, path, _use_new_zipfile_serialization=not legacy)
  _assert_same(read_state_dict(path), torch.load(path, weights_only=True))


def test_module_state_dict_and_checkpoint_wrapper(tmp_path):
  model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
  path = tmp_path / "m.pt"
  torch.save(model.state_dict(), path)  # an OrderedDict with _metadata
  _assert_same(read_state_dict(path), model.state_dict())
  wrapped = tmp_path / "ckpt.pth"
  torch.save({"epoch": 3, "state_dict": model.state_dict(), "note": "x"}, wrapped)
  _assert_same(read_state_dict(wrapped), model.state_dict())
  params = tmp_path / "params.pth"
  torch.save(dict(model.named_parameters()), params)  # nn.Parameter values
  _assert_same(read_state_dict(params), {k: v.detach() for k, v in model.named_parameters()})


class _Scripted(torch.nn.Module):
  """Parameters, a buffer, a plain tensor attribute (not in the state dict), nested modules."""

  def __init__(self):
    super().__init__()
    self.proj = torch.nn.Linear(3, 4)
    self.blocks = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.LayerNorm(4))
    self.scale = torch.nn.Parameter(torch.ones(()) * 2.5)
    self.register_buffer("offset", torch.arange(4.0))
    self.attn_mask = torch.full((4, 4), -1.0).triu(1)  # as OpenAI CLIP's: an attribute, not a buffer

  def forward(self, x):
    return self.blocks(self.proj(x)) * self.scale + self.offset + self.attn_mask[0]


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_archive(tmp_path, how):
  torch.manual_seed(0)
  module = _Scripted().eval()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torch.jit.* are deprecated in torch 2.x
    compiled = torch.jit.script(module) if how == "script" else torch.jit.trace(module, torch.zeros(1, 3))
    path = tmp_path / "model.pt"
    torch.jit.save(compiled, str(path))
    want = torch.jit.load(str(path)).state_dict()
  got = read_state_dict(path)
  assert "attn_mask" not in got and "offset" in got and "scale" in got
  assert sorted(got) == sorted(want)
  _assert_same({k: got[k] for k in want}, want)


def test_safetensors(tmp_path):
  from safetensors.torch import save_file
  state = {k: v.contiguous() for k, v in _state_dict().items() if k not in ("shared", "strided", "transposed")}
  state["transposed"] = _state_dict()["transposed"].contiguous()
  path = tmp_path / "w.safetensors"
  save_file(state, str(path))
  got = read_state_dict(path)
  _assert_same({k: got[k] for k in state}, state)
  renamed = tmp_path / "model.bin"  # recognised by content too
  renamed.write_bytes(path.read_bytes())
  got = read_state_dict(renamed)
  _assert_same({k: got[k] for k in state}, state)


# ---------------------------------------------------------------------------------------------
# Refusals: one line naming the file.


class _Evil:
  def __reduce__(self):
    import os
    return os.system, ("echo pwned > /dev/null",)


def _one_line(excinfo, path):
  message = str(excinfo.value)
  assert "\n" not in message and str(path) in message
  return message


def test_pickle_calling_os_system_is_refused(tmp_path, monkeypatch):
  import os
  evil = pickle.dumps({"w": _Evil()}, protocol=2)
  zipped = tmp_path / "evil.pth"
  torch.save({"w": torch.ones(2)}, zipped)
  # swap data.pkl for a pickle that calls os.system
  with zipfile.ZipFile(zipped) as archive:
    members = {n: archive.read(n) for n in archive.namelist()}
  members[[n for n in members if n.endswith("/data.pkl")][0]] = evil
  with zipfile.ZipFile(zipped, "w") as archive:
    for name, data in members.items():
      archive.writestr(name, data)
  raw = tmp_path / "evil.pkl"
  raw.write_bytes(pickle.dumps(_Evil(), protocol=2))
  calls = []
  monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
  for path in (zipped, raw):
    with pytest.raises(UserError, match="os.system|posix.system") as e:
      read_state_dict(path)
    _one_line(e, path)
  assert calls == []


def test_damaged_and_foreign_files(tmp_path):
  good = tmp_path / "w.pth"
  torch.save({"w": torch.randn(64, 64)}, good)
  data = good.read_bytes()
  truncated = tmp_path / "truncated.pth"
  truncated.write_bytes(data[:len(data) // 2])
  text = tmp_path / "notes.txt"
  text.write_text("not weights\n")
  legacy = tmp_path / "legacy.pth"
  torch.save({"w": torch.randn(64, 64)}, legacy, _use_new_zipfile_serialization=False)
  legacy_cut = tmp_path / "legacy-cut.pth"
  legacy_cut.write_bytes(legacy.read_bytes()[:-100])
  plain_zip = tmp_path / "archive.zip"
  with zipfile.ZipFile(plain_zip, "w") as archive:
    archive.writestr("readme.txt", "hello")
  array_pickle = tmp_path / "numbers.pkl"
  array_pickle.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
  bad_safetensors = tmp_path / "w.safetensors"
  bad_safetensors.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
  for path, pattern in ((truncated, "truncated|damaged"), (text, "not a PyTorch weights file"),
                        (legacy_cut, "truncated"), (plain_zip, "no data.pkl"),
                        (array_pickle, "not a PyTorch weights file"), (bad_safetensors, "safetensors"),
                        (tmp_path / "missing.pth", "does not exist"), (tmp_path, "not a regular file")):
    with pytest.raises(UserError, match=pattern) as e:
      read_state_dict(path)
    _one_line(e, path)


@pytest.mark.slow
def test_no_torch_import():
  import subprocess
  import sys
  code = ("import sys; import jxhash.nets.torch_io, jxhash.nets.alexnet, jxhash.nets.resnet, "
          "jxhash.nets.transforms; print('torch' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"



@pytest.mark.slow
def test_traced_torchvision_resnet_loads(tmp_path):
  """A TorchScript file of a real network (BatchNorm buffers included) feeds the ResNet importer."""
  torchvision = pytest.importorskip("torchvision")
  from jxhash.nets.resnet import ResNet, load_resnet
  torch.manual_seed(0)
  model = torchvision.models.resnet18(weights=None).eval()
  path = tmp_path / "resnet18-traced.pt"
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 3, 64, 64)), str(path))
  got = read_state_dict(path)
  _assert_same(got, model.state_dict())
  x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    want = model(x).numpy()
  out = ResNet(18).apply(load_resnet(path, 18), x.permute(0, 2, 3, 1).numpy())
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
