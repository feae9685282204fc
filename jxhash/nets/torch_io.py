"""PyTorch weight files read into numpy without importing torch.

`read_state_dict(path)` returns the flat {"name": array} dictionary a PyTorch model's
`state_dict()` holds, from the files users download:

  * `torch.save` archives (.pth, .pt, .bin; PyTorch >= 1.6): a zip holding `<prefix>/data.pkl`
    (the pickled object tree) and one raw little-endian storage per `<prefix>/data/<key>`;
  * TorchScript archives (`torch.jit.save`, e.g. OpenAI's released CLIP `ViT-B-32.pt`): the same
    zip layout, but the pickle holds `__torch__.*` module objects; their attributes are walked into
    the names `torch.jit.load(f).state_dict()` gives, using the `__parameters__` / `__buffers__`
    lists of the archive's `code/` files to tell parameters and buffers from other tensors
    (OpenAI's CLIP keeps its attention mask as a plain tensor attribute, not in the state dict);
  * legacy `torch.save` files (PyTorch < 1.6, or `_use_new_zipfile_serialization=False`): pickles
    back to back, the storages appended raw after them;
  * `.safetensors` files, through the small `safetensors` package.

Why not torch: it is a multi-gigabyte dependency for what is a zip of raw arrays plus a pickle
naming them. Pickles can run arbitrary code, so they are read with an Unpickler that knows a short
list of globals (OrderedDict, the tensor and parameter rebuild functions, the storage types,
TorchScript's list helpers and `__torch__` module classes, which become inert attribute bags) and
refuses anything else in one line: a weights file that names `os.system` is not loaded.

Tensors come back as numpy arrays of the stored dtype (float32, float16, bfloat16 as
`ml_dtypes.bfloat16`, int64, ...), contiguous, with the stored strides honoured (a transposed
tensor reads as its transpose). Each storage is read from the archive once, when the pickle
first names it; a tensor that covers its whole storage contiguously is a view of it (no copy),
any other is copied out of it.

A checkpoint dict wrapping the weights under "state_dict" or "model" (with optimiser state or an
epoch beside it) is unwrapped; entries that are not tensors are dropped.
"""

from __future__ import annotations

import collections
import io
import pathlib
import pickle
import re
import struct
import zipfile

import ml_dtypes
import numpy as np

from jxhash.errors import UserError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "ComplexFloatStorage": np.complex64, "ComplexDoubleStorage": np.complex128,
}
# What a legacy file starts with (torch/serialization.py's MAGIC_NUMBER and PROTOCOL_VERSION).
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


class _StorageType:
  """Stands for `torch.FloatStorage` etc. in a pickle: only its dtype matters."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
  """A storage named by the pickle; `data` (a flat array) is filled in by the reader."""

  def __init__(self, key: str, dtype: np.dtype, numel: int):
    self.key, self.dtype, self.numel = key, dtype, numel
    self.data: np.ndarray | None = None


class _Tensor:
  """A tensor waiting for its storage: (storage, offset, size, stride), in elements."""

  def __init__(self, storage: _Storage, offset: int, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

  def materialise(self, where: str) -> np.ndarray:
    data = self.storage.data
    if data is None:
      raise UserError(f"{where}: tensor storage {self.storage.key!r} is missing from the file; it may be "
                      "truncated or damaged")
    size, stride, offset = self.size, self.stride, self.offset
    count = int(np.prod(size, dtype=np.int64))
    if count == 0:
      return np.zeros(size, data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if offset < 0 or min(stride, default=0) < 0 or last >= data.size:
      raise UserError(f"{where}: a tensor of shape {size} (offset {offset}, strides {stride}) reaches past its "
                      f"storage {self.storage.key!r} of {data.size} elements; the file is damaged")
    contiguous = tuple(int(np.prod(size[i + 1:], dtype=np.int64)) for i in range(len(size)))
    if all(s == c for s, c, n in zip(stride, contiguous, size) if n > 1):
      flat = data[offset:offset + count]
      # a view keeps the whole storage alive: only take one when the tensor is all of it
      return flat.reshape(size) if count == data.size else flat.reshape(size).copy()
    item = data.itemsize
    view = np.lib.stride_tricks.as_strided(data[offset:], shape=size, strides=[s * item for s in stride],
                                           writeable=False)
    return np.ascontiguousarray(view)


class _Parameter:
  """`torch.nn.Parameter`: the tensor it wraps."""

  def __init__(self, tensor):
    self.tensor = tensor


class _ScriptObject:
  """An instance of a TorchScript class (`__torch__.*`): its pickled attributes, nothing more.

  Each class named by the pickle is a subclass carrying its `qualname`; NEWOBJ creates an
  instance without running any code, BUILD hands it the attribute dict.
  """

  qualname = ""

  def __setstate__(self, state):
    if not isinstance(state, dict):
      raise pickle.UnpicklingError(f"TorchScript object {self.qualname} has state of type {type(state).__name__}")
    self.attributes = state

  @property
  def members(self) -> dict:
    return self.__dict__.get("attributes", {})


_SCRIPT_CLASSES: dict[str, type] = {}


def _script_class(qualname: str) -> type:
  if qualname not in _SCRIPT_CLASSES:
    _SCRIPT_CLASSES[qualname] = type("ScriptObject", (_ScriptObject,), {"qualname": qualname})
  return _SCRIPT_CLASSES[qualname]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _Storage):
    raise pickle.UnpicklingError("a tensor rebuilt from something other than a storage")
  return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
  del requires_grad, backward_hooks, state
  return _Parameter(data)


def _identity(value, *args):
  del args
  return value


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    # TorchScript's typed-container helpers: the value itself
    ("torch.jit._pickle", "build_intlist"): _identity,
    ("torch.jit._pickle", "build_floatlist"): _identity,
    ("torch.jit._pickle", "build_boollist"): _identity,
    ("torch.jit._pickle", "build_doublelist"): _identity,
    ("torch.jit._pickle", "build_tensorlist"): _identity,
    ("torch.jit._pickle", "restore_type_tag"): _identity,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
}


class _Unpickler(pickle.Unpickler):
  """Knows the globals of weight files (see `_ALLOWED`) and nothing else."""

  def __init__(self, file, where: str, storages: dict, read_storage=None):
    super().__init__(file, encoding="utf-8")
    self.where = where
    self.storages = storages
    self.read_storage = read_storage

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[module, name]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if module == "torch" and name == "Size":
      return tuple
    if module == "__torch__" or module.startswith("__torch__."):
      return _script_class(f"{module}.{name}")
    raise UserError(f"{self.where}: refusing to load: its pickle calls {module}.{name}, which a weights file "
                    "has no need of (only tensors, dicts and TorchScript modules are read; save the model's "
                    "state_dict() instead)")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]}")
    kind, key, numel = pid[1], str(pid[2]), int(pid[4])
    if not isinstance(kind, _StorageType):
      raise pickle.UnpicklingError(f"storage of unknown type {kind!r}")
    if len(pid) > 5 and pid[5] is not None:
      raise UserError(f"{self.where}: holds a storage view (legacy PyTorch < 0.4 layout), which is not supported; "
                      "load it in PyTorch and save its state_dict() again")
    storage = self.storages.get(key)
    if storage is None:
      storage = self.storages[key] = _Storage(key, kind.dtype, numel)
      if self.read_storage is not None:
        storage.data = self.read_storage(storage)
    return storage


# ---------------------------------------------------------------------------------------------


def read_state_dict(path) -> dict[str, np.ndarray]:
  """The flat {name: array} state dict in a PyTorch weights file (module docstring).

  Args:
    path: a `torch.save` or `torch.jit.save` archive, a legacy `torch.save` file, or a
      `.safetensors` file.

  Returns:
    {"features.0.weight": array, ...} in the file's order, arrays in their stored dtype and shape.

  Raises:
    UserError naming the file: missing, not a PyTorch weights file, truncated or damaged, a pickle
    calling anything but the tensor-building functions, or no tensors in it.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise UserError(f"weights file {path} does not exist")
  if not path.is_file():
    raise UserError(f"weights file {path} is not a regular file")
  try:
    with open(path, "rb") as f:
      head = f.read(9)
  except OSError as e:
    raise UserError(f"cannot read weights file {path}: {e.strerror or e}") from e
  if path.suffix.lower() == ".safetensors":
    return _read_safetensors(path)
  try:
    if zipfile.is_zipfile(path) or head.startswith(b"PK"):
      return _read_zip(path)
    if head[:1] == b"\x80":
      return _read_legacy(path)
    if head[8:9] == b"{":  # safetensors under another name: an 8-byte header length, then JSON
      return _read_safetensors(path)
  except UserError:
    raise
  except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, struct.error, ValueError, KeyError, TypeError,
          AttributeError, IndexError, OSError) as e:
    raise UserError(f"weights file {path} is damaged or truncated ({type(e).__name__}: "
                    f"{' '.join(str(e).split())[:120]}); download it again") from e
  raise UserError(f"{path} is not a PyTorch weights file (neither a torch.save/torch.jit.save archive, a legacy "
                  "torch.save file, nor .safetensors)")


def _read_zip(path: pathlib.Path) -> dict[str, np.ndarray]:
  where = str(path)
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1] or \
              [n for n in names if n == "data.pkl"]
    if not pickles:
      raise UserError(f"{path} is a zip file but not a PyTorch archive (no data.pkl in it)")
    prefix = pickles[0][:-len("data.pkl")]
    big_endian = False
    if f"{prefix}byteorder" in names:
      big_endian = archive.read(f"{prefix}byteorder").strip() == b"big"
    members = set(names)

    def read_storage(storage: _Storage) -> np.ndarray:
      member = f"{prefix}data/{storage.key}"
      if member not in members:
        raise UserError(f"{where}: storage {member} is missing from the archive; it is truncated or damaged")
      info = archive.getinfo(member)
      nbytes = storage.numel * storage.dtype.itemsize
      if info.file_size < nbytes:
        raise UserError(f"{where}: storage {member} holds {info.file_size} bytes, its tensor needs {nbytes}; "
                        "the file is truncated or damaged")
      buffer = bytearray(nbytes)
      with archive.open(member) as f:
        got = f.readinto(memoryview(buffer))
      if got != nbytes:
        raise UserError(f"{where}: storage {member} ended after {got} of {nbytes} bytes; the file is truncated")
      dtype = storage.dtype.newbyteorder(">") if big_endian else storage.dtype
      data = np.frombuffer(buffer, dtype)
      return data.astype(storage.dtype) if big_endian else data

    storages: dict = {}
    with archive.open(pickles[0]) as f:
      root = _Unpickler(io.BufferedReader(f), where, storages, read_storage).load()
    code = {n[len(prefix) + 5:]: n for n in names if n.startswith(f"{prefix}code/") and n.endswith(".py")}
    if isinstance(root, _ScriptObject):
      kinds = _script_member_kinds(archive, code)
      return _finish(_script_state_dict(root, kinds), where)
  return _finish(root, where)


_CLASS = re.compile(r"^class\s+(\w+)\s*\(", re.MULTILINE)
_LIST = re.compile(r"^\s+__(parameters|buffers)__\s*=\s*\[([^\]]*)\]", re.MULTILINE)


def _script_member_kinds(archive: zipfile.ZipFile, code: dict) -> dict[str, tuple[list, list]]:
  """qualified class name -> (parameter names, buffer names), from the archive's code/ files."""
  kinds = {}
  for relative, member in code.items():
    module = relative[:-len(".py")].replace("/", ".")
    text = archive.read(member).decode("utf-8", "replace")
    starts = [(m.start(), m.group(1)) for m in _CLASS.finditer(text)]
    for i, (start, name) in enumerate(starts):
      end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
      lists = {"parameters": [], "buffers": []}
      for m in _LIST.finditer(text, start, end):
        lists[m.group(1)] = re.findall(r"\"([^\"]*)\"|'([^']*)'", m.group(2))
        lists[m.group(1)] = [a or b for a, b in lists[m.group(1)]]
      kinds[f"{module}.{name}"] = (lists["parameters"], lists["buffers"])
  return kinds


def _script_state_dict(root: _ScriptObject, kinds: dict) -> dict:
  """{"sub.module.param": tensor}: parameters, then buffers, then submodules, module by module."""
  out = {}

  def walk(obj: _ScriptObject, prefix: str):
    attributes = obj.members
    if obj.qualname in kinds:
      params, buffers = kinds[obj.qualname]
      names = [n for n in params + buffers if n in attributes]
    else:  # no code for this class: every tensor attribute
      names = [n for n, v in attributes.items() if isinstance(v, (_Tensor, _Parameter))]
    for name in names:
      if attributes[name] is not None:
        out[prefix + name] = attributes[name]
    for name, value in attributes.items():
      if isinstance(value, _ScriptObject):
        walk(value, f"{prefix}{name}.")

  walk(root, "")
  return out


def _read_legacy(path: pathlib.Path) -> dict[str, np.ndarray]:
  where = str(path)
  storages: dict = {}
  with open(path, "rb") as f:
    def load():
      return _Unpickler(f, where, storages).load()

    try:
      magic = load()
    except (pickle.UnpicklingError, EOFError, ValueError):
      raise UserError(f"{path} is not a PyTorch weights file (neither a torch.save/torch.jit.save archive, a "
                      "legacy torch.save file, nor .safetensors)") from None
    if magic != _LEGACY_MAGIC:
      raise UserError(f"{path} is a pickle but not a PyTorch weights file (no torch.save magic number); "
                      "jxhash does not load arbitrary pickles")
    if load() != _LEGACY_PROTOCOL:
      raise UserError(f"{path}: unsupported legacy torch.save protocol version")
    load()  # sys_info: byte order and type sizes of the saving machine
    root = load()
    keys = load()
    for key in keys:
      storage = storages.get(str(key))
      if storage is None:
        raise UserError(f"{path}: storage {key!r} is listed but no tensor uses it; the file is damaged")
      (numel,) = struct.unpack("<q", f.read(8))
      nbytes = numel * storage.dtype.itemsize
      buffer = bytearray(nbytes)
      if f.readinto(memoryview(buffer)) != nbytes:
        raise UserError(f"weights file {path} is truncated (storage {key!r} is incomplete); download it again")
      storage.data = np.frombuffer(buffer, storage.dtype)
  return _finish(root, where)


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    from safetensors.numpy import load_file
  except ImportError as e:  # pragma: no cover - a core dependency
    raise UserError(f"reading {path} needs the safetensors package: pip install safetensors") from e
  try:
    return dict(load_file(str(path)))
  except Exception as e:  # safetensors raises its own SafetensorError and others for damaged files
    raise UserError(f"weights file {path} is not a readable .safetensors file ({type(e).__name__}: "
                    f"{' '.join(str(e).split())[:120]})") from e


def _finish(root, where: str) -> dict[str, np.ndarray]:
  """Unwrap a checkpoint dict, keep the tensors, turn them into arrays."""
  if isinstance(root, _ScriptObject):
    raise UserError(f"{where}: a TorchScript object where a state dict was expected")
  if not isinstance(root, dict):
    raise UserError(f"{where}: holds a pickled {type(root).__name__}, not a state dict of tensors")
  for key in _WRAPPER_KEYS:
    if not _has_tensors(root) and isinstance(root.get(key), dict):
      root = root[key]
  out = {}
  for name, value in root.items():
    if isinstance(value, _Parameter):
      value = value.tensor
    if isinstance(value, _Tensor):
      out[str(name)] = value.materialise(f"{where} [{name}]")
  if not out:
    raise UserError(f"{where}: no tensors found (top-level keys {list(root)[:8]}); expected a model's state_dict()")
  return out


def _has_tensors(d: dict) -> bool:
  return any(isinstance(v, (_Tensor, _Parameter)) for v in d.values())


__all__ = ["read_state_dict"]
