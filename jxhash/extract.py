"""Feature extraction: a folder of images (or a file of texts) -> one feature row each, in a .npz.

    python -m jxhash.extract --encoder resnet34 --weights resnet34-b627a593.pth --images photos/ --out f.npz
    python -m jxhash.extract --encoder clip-vit-b32 --weights ViT-B-32.pt --texts captions.txt --out t.npz
    jxhash extract --encoder alexnet --weights alexnet-owt-7be5be79.pth --prepared data/mirflickr25k-dcmh \
        --raw RAW --out data/mirflickr25k-dcmh/image_features.npz
    python experiments/extract.py ...   # the same command (and `jxhash extract ...` where a jxhash
                                        # command dispatches here: main() skips a leading "extract")

Encoders (`ENCODERS`) and their features:
  alexnet       torchvision AlexNet, fc7 after its ReLU (4096)        weights alexnet-owt-7be5be79.pth
  resnet34      torchvision ResNet-34, global average pool (512)      weights resnet34-b627a593.pth
  cnn-f         DCMH's CNN-F, fc7 after its ReLU (4096)               weights imagenet-vgg-f.mat
  clip-vit-b32  CLIP ViT-B/32, projected embeddings, not normalised (512); images or --texts
                                                                      weights ViT-B-32.pt (OpenAI)

Output (.npz): `features` (N, D) float32, one row per image file in sorted file-name order (the
folder's regular files with an image extension, not recursing; hidden files skipped) or per line
of the text file; `ids` (N,) strings: the image file names without their extension, or the text
file's line numbers counted from 1. With `--prepared DIR --raw RAW` the rows are exactly the items
of a folder written by `jxhash prepare`, in its order: the images its images.txt names, read
from the raw root prepare read (extracted files, or members of the official .zip archives as
downloaded; a .tgz must be extracted first), and `ids` are its ids.txt. `record`: a JSON string
with the encoder, the weights file and its sha256, the preprocessing, the inputs and the jxhash
version. Load it as a dataset with
`jxhash.data.load("features", image="feats.npz:features", text=..., labels=...)`, or give it to the
`prepared` loader as `image_features=`.

Work is streamed: images are decoded one batch at a time (the next batch while the current one
runs), every batch goes through one jitted forward of a fixed shape (the last one padded), and
each finished batch is saved at once as a shard in `<out>.partial/`, next to a progress record of
the encoder, weights sha256 and inputs. A killed run continues where it stopped when rerun with
the same arguments (any batch size); other inputs, encoder or weights are refused unless
--overwrite restarts it. The .npz is assembled from the shards at the end, written atomically,
and the partial folder removed. An existing --out is never replaced without --overwrite.

Input checks come first (unknown encoder, --texts for an image-only encoder, no images, an image
of a prepared folder missing from --raw, missing weights, an --out that exists or cannot be
written): one line on stderr, exit code 2.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import sys
import zipfile
from typing import Callable, Sequence

import numpy as np

from jxhash import fileio
from jxhash.errors import TrainingInterrupted, UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
PARTIAL_SUFFIX = ".partial"
PROGRESS_FILE = "progress.json"
DEFAULT_BATCH = 32


@dataclasses.dataclass
class Model:
  """A loaded encoder: per-item preprocessing and batched forwards (numpy in, numpy out)."""

  image_input: Callable  # PIL image -> (H, W, 3) float32
  encode_images: Callable  # (B, H, W, 3) float32 -> (B, D)
  preprocessing: str
  encode_texts: Callable | None = None  # list[str] -> (B, D)


@dataclasses.dataclass(frozen=True)
class Encoder:
  name: str
  features: str
  weights_hint: str
  load: Callable[[pathlib.Path], Model]
  texts: bool = False


def _jitted(module, variables):
  import jax
  forward = jax.jit(module.apply)
  variables = jax.device_put(variables)  # once, not with every batch (host arrays are copied per call)
  return lambda x: np.asarray(forward(variables, x))


def _load_alexnet(path) -> Model:
  from jxhash.nets import transforms
  from jxhash.nets.alexnet import AlexNet, load_alexnet
  params = load_alexnet(path)
  params.pop("fc8")
  return Model(transforms.imagenet, _jitted(AlexNet(features_only=True), {"params": params}),
               transforms.IMAGENET_DESCRIPTION)


def _load_resnet34(path) -> Model:
  from jxhash.nets import transforms
  from jxhash.nets.resnet import ResNet, load_resnet
  variables = load_resnet(path, 34)
  variables["params"].pop("fc")
  return Model(transforms.imagenet, _jitted(ResNet(34, features_only=True), variables),
               transforms.IMAGENET_DESCRIPTION)


def _load_cnn_f(path) -> Model:
  from jxhash.nets import transforms
  from jxhash.nets.cnnf import CNNF
  from jxhash.nets.vgg_f import load_vgg_f
  params, mean_image = load_vgg_f(path)
  return Model(lambda image: transforms.cnn_f(image, mean_image),
               _jitted(CNNF(bits=1, features_only=True), {"params": params}), transforms.CNN_F_DESCRIPTION)


def _load_clip(path) -> Model:
  from jxhash.nets import clip  # the CLIP port (jxhash.nets.clip)
  import jax
  params, cfg = clip.load_clip(path)
  params = jax.device_put(params)  # once, not with every batch
  return Model(clip.preprocess_image, lambda x: np.asarray(clip.encode_image(params, cfg, x)),
               "CLIP eval: Resize(224, shorter side, PIL bicubic), CenterCrop(224), /255, Normalize(CLIP mean, "
               "std); texts: CLIP BPE tokens, 77 per text",
               encode_texts=lambda texts: np.asarray(clip.encode_text(params, cfg, clip.tokenize(texts))))


ENCODERS = {e.name: e for e in (
    Encoder("clip-vit-b32", "projected embeddings (not normalised)", "OpenAI's ViT-B-32.pt", _load_clip, texts=True),
    Encoder("alexnet", "fc7 after ReLU", "torchvision's alexnet-owt-7be5be79.pth", _load_alexnet),
    Encoder("resnet34", "global average pool", "torchvision's resnet34-b627a593.pth", _load_resnet34),
    Encoder("cnn-f", "fc7 after ReLU", "MatConvNet's imagenet-vgg-f.mat", _load_cnn_f),
)}


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclasses.dataclass
class Inputs:
  kind: str  # "images" or "texts"
  source: pathlib.Path
  ids: list[str]
  items: list  # image paths, or text lines
  digest: str  # what a resumed run must find unchanged
  opener: Callable | None = None  # item -> RGB PIL image, where items are not plain paths
  close: Callable = lambda: None  # releases what the opener holds (open archives)

  def describe(self) -> dict:
    return {"kind": self.kind, "path": str(self.source), "count": len(self.ids), "digest": self.digest}


def list_images(folder) -> Inputs:
  """The image files directly in `folder`, sorted by name, with their ids (names without extension)."""
  folder = fileio.resolve(folder)
  if not folder.exists():
    raise UserError(f"--images folder {folder} does not exist")
  if not folder.is_dir():
    raise UserError(f"--images {folder} is not a folder")
  try:
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
  except OSError as e:
    raise UserError(f"cannot list --images folder {folder}: {fileio.describe_os_error(e)}") from e
  paths, ids, digest = [], [], hashlib.sha256()
  seen: dict[str, str] = {}
  for entry in entries:
    if entry.name.startswith(".") or not entry.is_file():
      continue
    stem, ext = os.path.splitext(entry.name)
    if ext.lower() not in IMAGE_EXTENSIONS:
      continue
    if stem in seen:
      raise UserError(f"--images folder {folder}: {seen[stem]} and {entry.name} would share the id {stem!r}; "
                      "rename one")
    seen[stem] = entry.name
    stat = entry.stat()
    digest.update(f"{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    paths.append(pathlib.Path(entry.path))
    ids.append(stem)
  if not paths:
    raise UserError(f"--images folder {folder} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
  return Inputs("images", folder, ids, paths, digest.hexdigest())


def list_prepared(prepared, raw) -> Inputs:
  """The images of a `jxhash prepare` folder (its images.txt, relative to the raw root `raw`), in its
  order, with its ids (ids.txt). Images are plain files under `raw` or members of its .zip archives;
  every one is looked up before any is decoded."""
  from jxhash.data.prepare.common import RawTree
  from jxhash.errors import DataError
  folder = fileio.resolve(prepared)
  if not folder.is_dir():
    raise UserError(f"--prepared {folder}: not a folder (give the --out folder of `jxhash prepare`)")
  texts = {}
  for name in ("ids.txt", "images.txt"):
    path = folder / name
    if not path.is_file():
      raise UserError(f"--prepared {folder}: no {name}; is it a folder written by `jxhash prepare`?")
    try:
      texts[name] = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
      raise UserError(f"cannot read {path}: {e}") from e
  ids, images = texts["ids.txt"].splitlines(), texts["images.txt"].splitlines()
  if len(ids) != len(images) or not ids:
    raise UserError(f"--prepared {folder}: ids.txt has {len(ids)} lines and images.txt {len(images)}; prepare it "
                    "again")
  try:
    tree = RawTree(raw)
  except DataError as e:
    raise UserError(str(e)) from None
  missing = [rel for rel in images if not tree.exists(rel)]
  if missing:
    tree.close()
    raise UserError(f"--raw {tree.root}: {len(missing)} of the {len(images)} images of {folder} are not there "
                    f"(first: {missing[0]}); give the raw folder that prepare read")
  in_tar = [rel for rel in images if tree.source(rel) is not None and not tree.source(rel).endswith(".zip")]
  if in_tar:
    tree.close()
    raise UserError(f"--raw {tree.root}: {in_tar[0]} is inside {tree.source(in_tar[0])}, which can only be read "
                    "in one pass; extract that archive into --raw first")

  def opener(rel):
    from jxhash.nets.transforms import open_image
    try:
      return open_image(io.BytesIO(tree.read_bytes(rel, record=False)))
    except (UserError, DataError) as e:
      reason = str(e).split(": ", 1)[-1]
      raise UserError(f"cannot read image {tree.where(rel)}: {reason}") from None

  digest = hashlib.sha256(f"{tree.root}\0{texts['ids.txt']}\0{texts['images.txt']}".encode())
  return Inputs("images", folder, ids, images, digest.hexdigest(), opener=opener, close=tree.close)


def read_texts(path) -> Inputs:
  """The lines of a UTF-8 text file, ids their line numbers from 1."""
  path = fileio.require_readable_file(path, what="--texts file")
  try:
    data = path.read_bytes()
    lines = data.decode("utf-8").splitlines()
  except UnicodeDecodeError as e:
    raise UserError(f"--texts file {path} is not UTF-8 text (byte {e.start})") from e
  except OSError as e:
    raise UserError(f"cannot read --texts file {path}: {fileio.describe_os_error(e)}") from e
  if not lines:
    raise UserError(f"--texts file {path} is empty")
  return Inputs("texts", path, [str(i + 1) for i in range(len(lines))], lines, hashlib.sha256(data).hexdigest())


# ---------------------------------------------------------------------------------------------
# Resumable output


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  try:
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 22), b""):
        digest.update(block)
  except OSError as e:
    raise UserError(f"cannot read --weights file {path}: {fileio.describe_os_error(e)}") from e
  return digest.hexdigest()


def _shard_name(start: int, stop: int) -> str:
  return f"rows-{start:010d}-{stop:010d}.npy"


def _done_rows(partial: pathlib.Path) -> list[tuple[int, int, pathlib.Path]]:
  """The shards that continue each other from row 0 (a gap ends the list)."""
  shards = {}
  for path in partial.glob("rows-*-*.npy"):
    try:
      start, stop = (int(p) for p in path.stem.split("-")[1:3])
    except ValueError:
      continue
    shards[start] = (start, stop, path)
  done, row = [], 0
  while row in shards:
    done.append(shards[row])
    row = shards[row][1]
  return done


def _prepare_partial(partial: pathlib.Path, progress: dict, overwrite: bool) -> int:
  """Create or check `<out>.partial/`; the number of rows already done."""
  record = partial / PROGRESS_FILE
  if partial.exists():
    if not partial.is_dir() or not record.is_file():
      raise UserError(f"{partial} exists but is not an extraction in progress (no {PROGRESS_FILE}); move it away")
    try:
      found = json.loads(record.read_text())
    except (OSError, ValueError):
      found = None
    same = isinstance(found, dict) and all(found.get(k) == progress[k] for k in ("encoder", "weights_sha256", "inputs"))
    if not same:
      if not overwrite:
        raise UserError(f"{partial} holds an unfinished extraction of other inputs, encoder or weights; rerun "
                        "that command to finish it, or pass --overwrite to start this one over")
      _remove_partial(partial)
    else:
      shards = _done_rows(partial)
      return shards[-1][1] if shards else 0
  partial.mkdir(parents=True, exist_ok=True)
  fileio.atomic_write_json(record, progress, what="progress record")
  return 0


def _remove_partial(partial: pathlib.Path) -> None:
  """Remove what extraction wrote there (shards, progress record, temporary files), then the folder."""
  for path in partial.iterdir():
    if path.is_file() and not path.is_symlink() and (path.name == PROGRESS_FILE or path.suffix == ".npy"
                                                     or path.name.endswith(fileio._TMP_SUFFIX)):
      path.unlink()
  try:
    partial.rmdir()
  except OSError as e:
    raise UserError(f"cannot remove {partial}: {fileio.describe_os_error(e)} (it holds files extraction did "
                    "not write)") from e


def _write_npz(out: pathlib.Path, shards, rows: int, dim: int, ids: Sequence[str], record: dict) -> None:
  """The .npz, `features` streamed from the shards (never all in memory), written atomically."""
  header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
            "shape": (rows, dim)}
  with fileio.atomic_output(out, what="--out file") as tmp:
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
      with archive.open("features.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_2_0(f, header)
        for _, _, path in shards:
          block = np.load(path, allow_pickle=False)
          f.write(np.ascontiguousarray(block, np.float32).tobytes())
      with archive.open("ids.npy", "w") as f:
        np.save(f, np.asarray(ids, dtype=str), allow_pickle=False)
      with archive.open("record.npy", "w") as f:
        np.save(f, np.asarray(json.dumps(record, sort_keys=True)), allow_pickle=False)


# ---------------------------------------------------------------------------------------------
# Extraction


def _batches(inputs: Inputs, start: int, batch_size: int, model: Model, workers: int):
  """(start, stop, batch) from row `start` on; the next batch is decoded while the caller works."""
  from jxhash.nets.transforms import open_image

  def image_row(item):
    return model.image_input((inputs.opener or open_image)(item))

  def load(lo, hi):
    if inputs.kind == "texts":
      return inputs.items[lo:hi]
    return np.stack(list(pool.map(image_row, inputs.items[lo:hi])))

  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool, \
       concurrent.futures.ThreadPoolExecutor(max_workers=1) as ahead:
    spans = [(lo, min(lo + batch_size, len(inputs.ids))) for lo in range(start, len(inputs.ids), batch_size)]
    pending = ahead.submit(load, *spans[0]) if spans else None
    for i, (lo, hi) in enumerate(spans):
      batch = pending.result()
      pending = ahead.submit(load, *spans[i + 1]) if i + 1 < len(spans) else None
      yield lo, hi, batch


def extract(encoder: str, weights, out, *, images=None, texts=None, prepared=None, raw=None,
            batch_size: int = DEFAULT_BATCH, overwrite: bool = False, progress: bool = True,
            max_batches: int | None = None, workers: int = 4) -> dict:
  """Extract features (module docstring) and write them to `out`.

  Args:
    encoder: a name in `ENCODERS`.
    weights: the encoder's weights file.
    out: the .npz to write.
    images / texts / prepared: a folder of images, or a UTF-8 text file with one text per line
      (CLIP only), or a folder written by `jxhash prepare` (its images, read from `raw`); exactly one.
    raw: with `prepared`, the raw root prepare read (images.txt is relative to it).
    batch_size: items per forward pass.
    overwrite: replace an existing `out`, and restart an unfinished extraction of other inputs.
    progress: show a tqdm bar (updated every 30 s when stderr is not a terminal).
    max_batches: stop after this many batches in this call, leaving the partial folder to resume
      from (for tests and time-limited jobs); the return value says whether it finished.
    workers: threads decoding images.

  Returns:
    {"out", "rows", "dim", "finished", "resumed_from"}.
  """
  if encoder not in ENCODERS:
    raise UserError(f"unknown encoder {encoder!r}; choose from {', '.join(ENCODERS)}")
  spec = ENCODERS[encoder]
  if sum(x is not None for x in (images, texts, prepared)) != 1:
    raise UserError("give exactly one of --images FOLDER, --texts FILE and --prepared FOLDER")
  if (prepared is None) != (raw is None):
    raise UserError("--prepared FOLDER and --raw FOLDER go together (the prepared items' images are read from "
                    "the raw folder prepare read)")
  if texts is not None and not spec.texts:
    raise UserError(f"--texts needs a text encoder; {encoder} encodes images only (clip-vit-b32 does both)")
  if batch_size < 1:
    raise UserError(f"--batch-size must be >= 1, got {batch_size}")
  if prepared is not None:
    inputs = list_prepared(prepared, raw)
  else:
    inputs = list_images(images) if images is not None else read_texts(texts)
  try:
    return _extract(spec, inputs, weights, out, batch_size=batch_size, overwrite=overwrite, progress=progress,
                    max_batches=max_batches, workers=workers)
  finally:
    inputs.close()


def _extract(spec: Encoder, inputs: Inputs, weights, out, *, batch_size, overwrite, progress, max_batches,
             workers) -> dict:
  encoder = spec.name
  weights = fileio.require_readable_file(weights, what="--weights file")
  out = fileio.require_writable_file(out, what="--out file")
  if out.exists() and not overwrite:
    raise UserError(f"--out file {out} exists; pass --overwrite to replace it")
  partial = out.with_name(out.name + PARTIAL_SUFFIX)
  if partial.is_symlink():
    raise UserError(f"{partial} is a symbolic link; extraction does not write through links")

  import jxhash
  weights_sha256 = _sha256(weights)
  progress_record = {"encoder": encoder, "weights": str(weights), "weights_sha256": weights_sha256,
                     "inputs": inputs.describe(), "jxhash_version": jxhash.__version__}
  model = spec.load(weights)
  done = _prepare_partial(partial, progress_record, overwrite)
  resumed_from = done

  bar = _progress_bar(len(inputs.ids), done, inputs.kind, progress)
  batches = 0
  try:
    for lo, hi, batch in (_batches(inputs, done, batch_size, model, workers) if done < len(inputs.ids) else ()):
      if max_batches is not None and batches >= max_batches:
        break
      if inputs.kind == "texts":
        features = model.encode_texts(list(batch) + [""] * (batch_size - len(batch)))
      else:
        padded = np.zeros((batch_size, *batch.shape[1:]), np.float32)
        padded[:len(batch)] = batch
        features = model.encode_images(padded)
      features = np.asarray(features, np.float32)[:hi - lo]
      with fileio.atomic_output(partial / _shard_name(lo, hi), what="feature shard") as tmp:
        with open(tmp, "wb") as f:
          np.save(f, features, allow_pickle=False)
      done = hi
      batches += 1
      bar.update(hi - lo)
  except KeyboardInterrupt:
    raise TrainingInterrupted(f"extraction stopped after {done} of {len(inputs.ids)} rows; rerun the same "
                              f"command to continue (the finished batches are kept in {partial})") from None
  finally:
    bar.close()

  shards = _done_rows(partial)
  rows = shards[-1][1] if shards else 0
  if rows < len(inputs.ids):
    return {"out": str(out), "rows": rows, "dim": None, "finished": False, "resumed_from": resumed_from}
  dim = int(np.load(shards[0][2], mmap_mode="r").shape[1])
  record = dict(progress_record, preprocessing=model.preprocessing if inputs.kind == "images" else
                "CLIP BPE tokens, 77 per text", features=spec.features, feature_dim=dim,
                ids=("ids.txt of the prepared folder" if inputs.opener is not None else "file names without "
                     "extension") if inputs.kind == "images" else "line numbers from 1")
  _write_npz(out, shards, rows, dim, inputs.ids, record)
  _remove_partial(partial)
  return {"out": str(out), "rows": rows, "dim": dim, "finished": True, "resumed_from": resumed_from}


def _progress_bar(total: int, initial: int, unit: str, enabled: bool):
  from tqdm.auto import tqdm
  interactive = sys.stderr.isatty()
  return tqdm(total=total, initial=initial, unit=unit[:-1], desc="extract", disable=not enabled,
              mininterval=0.5 if interactive else 30.0, maxinterval=60.0 if interactive else 600.0,
              dynamic_ncols=True)


def read_features(path) -> tuple[np.ndarray, np.ndarray, dict]:
  """(features, ids, record) of an extract output."""
  with np.load(path, allow_pickle=False) as f:
    return f["features"], f["ids"], json.loads(str(f["record"]))


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser():
  from jxhash.cli import ArgumentParser, int_at_least
  p = ArgumentParser(prog="jxhash extract", description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 2)[2])
  p.add_argument("--encoder", required=True, choices=list(ENCODERS), help="the network (see below)")
  p.add_argument("--weights", required=True, help="the encoder's weights file")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--images", help="folder of images (sorted by name; not recursive)")
  source.add_argument("--texts", help="UTF-8 text file, one text per line (clip-vit-b32 only)")
  source.add_argument("--prepared", help="a folder written by `jxhash prepare`: its items' images, in its order, "
                                         "ids from its ids.txt (needs --raw)")
  p.add_argument("--raw", help="with --prepared: the raw folder prepare read (extracted, or the .zip downloads)")
  p.add_argument("--out", required=True, help=".npz file to write")
  p.add_argument("--batch-size", type=int_at_least(1), default=DEFAULT_BATCH, help=f"default {DEFAULT_BATCH}")
  p.add_argument("--overwrite", action="store_true", help="replace --out, restart another unfinished extraction")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p


def _run(args) -> None:
  result = extract(args.encoder, args.weights, args.out, images=args.images, texts=args.texts,
                   prepared=args.prepared, raw=args.raw, batch_size=args.batch_size, overwrite=args.overwrite,
                   progress=not args.no_progress)
  print(f"wrote {result['rows']} x {result['dim']} features -> {result['out']}")


def main(argv=None) -> int:
  """`jxhash extract ...`: exit code 0, or 2 with one line on stderr for a user error.

  `argv` are the flags; a leading "extract" (as a `jxhash` dispatcher passes it) is skipped.
  """
  from jxhash import cli
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["extract"]:
    argv = argv[1:]
  return cli.main(_run, argv, build_parser())


if __name__ == "__main__":
  sys.exit(main())
