"""What every `prepare` shares: the raw tree, hashing, deterministic writers, resumable steps.

`RawTree` presents a raw root as one tree of relative POSIX paths: the plain files under it and
the members of the official archives in it (.zip read member by member; .tgz/.tar read in one
streaming pass, keeping only the members a dataset asks for). An extracted file wins over the
same path inside an archive. Every file whose bytes are read (annotation, tag and list files,
and every archive, which is read at least to list it; archives are hashed by `hash_archives`,
once per preparation) gets its sha256 recorded for the manifest; image files are only listed (and their first bytes checked), never hashed or decoded.

`Workspace` runs the steps of a preparation in `<out>.partial/`: each step writes its files
atomically and is then recorded as done in `state.json`, so a killed run continues where it
stopped when rerun with the same settings; the finished folder is renamed to `<out>` at the end.
Files are written deterministically (no timestamps, sorted JSON keys, .npz members with a fixed
date), so a second run on the same inputs gives byte-identical outputs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import shutil
import sys
import tarfile
import zipfile
from typing import Callable, Iterable, Iterator

import numpy as np

from jxhash import fileio
from jxhash.errors import DataError, UserError

ARCHIVES = (".zip", ".tgz", ".tar.gz", ".tar")
JPEG_MAGIC = b"\xff\xd8\xff"
_CHUNK = 1 << 20
# Fixed member date of the .npz files written here (the earliest a zip can hold).
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def sha256_file(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(_CHUNK), b""):
      digest.update(block)
  return digest.hexdigest()


def progress(iterable, *, total: int | None = None, desc: str = "", enabled: bool = True):
  """tqdm over `iterable`: live on a terminal; on a pipe or log file one line a minute at most."""
  if not enabled:
    return iterable
  from tqdm import tqdm
  tty = sys.stderr.isatty()
  return tqdm(iterable, total=total, desc=desc, leave=False, mininterval=0.1 if tty else 60.0,
              maxinterval=10.0 if tty else 600.0, file=sys.stderr, dynamic_ncols=tty)


class RawTree:
  """The files of a raw root (a folder holding the official downloads, zipped or extracted).

  Args:
    root: the folder.
    keep_tar: for .tgz/.tar archives, which member paths to keep in memory (they can only be
      read sequentially); other members are listed only.
  """

  def __init__(self, root, *, keep_tar: Callable[[str], bool] = lambda name: False):
    self.root = fileio.resolve(root)
    if not self.root.is_dir():
      raise DataError(f"--raw {self.root}: not a folder (give the folder holding the official downloads)")
    self.files: dict[str, tuple[str | None, str]] = {}  # path -> (archive or None, member or disk path)
    self.hashes: dict[str, dict] = {}
    self._zips: dict[str, zipfile.ZipFile] = {}
    self._tar_cache: dict[str, bytes] = {}
    self.archives: list[str] = []  # the archives indexed, relative to the root
    archives = []
    for directory, dirs, names in os.walk(self.root):
      dirs.sort()
      for name in sorted(names):
        path = pathlib.Path(directory, name)
        rel = path.relative_to(self.root).as_posix()
        if name.endswith(ARCHIVES):
          archives.append(rel)
        else:
          self.files[rel] = (None, rel)
    for rel in archives:
      self._index_archive(rel, keep_tar)

  def _index_archive(self, rel: str, keep_tar) -> None:
    path = self.root / rel
    if rel.endswith(".zip"):
      try:
        archive = zipfile.ZipFile(path)
        names = archive.namelist()
      except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable zip archive ({e}); download it again") from None
      self._zips[rel] = archive
      self.archives.append(rel)
      for member in names:
        if not member.endswith("/"):
          self.files.setdefault(member.replace("\\", "/"), (rel, member))
      return
    try:
      with tarfile.open(path, "r:*") as archive:
        for info in archive:
          if not info.isfile():
            continue
          name = info.name.lstrip("./")
          if name not in self.files:
            self.files[name] = (rel, name)
            if keep_tar(name):
              self._tar_cache[name] = archive.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError, zlib_error()) as e:
      raise DataError(f"{path}: not a readable tar archive ({e}); download it again") from None
    self.archives.append(rel)

  def hash_archives(self) -> None:
    """Record the sha256 of every archive indexed (read whole: done once, by the scan step)."""
    for rel in self.archives:
      self._hash(rel)

  def _hash(self, rel: str) -> None:
    if rel not in self.hashes:
      path = self.root / rel
      self.hashes[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}

  def close(self) -> None:
    for archive in self._zips.values():
      archive.close()
    self._zips.clear()

  # -- lookup ---------------------------------------------------------------------------------

  def exists(self, rel: str) -> bool:
    return rel in self.files

  def find(self, suffix: str) -> list[str]:
    """Paths that are `suffix` or end with "/" + `suffix`, sorted."""
    return sorted(p for p in self.files if p == suffix or p.endswith("/" + suffix))

  def find_one(self, suffix: str, what: str) -> str:
    """The one path ending with `suffix`; a DataError naming `what` if none (or several)."""
    found = self.find(suffix)
    if not found:
      raise DataError(f"--raw {self.root}: no {suffix} found ({what}); is it the right folder, with the "
                      "official downloads (zipped or extracted)?")
    if len(found) > 1:
      raise DataError(f"--raw {self.root}: {len(found)} copies of {suffix} ({', '.join(found[:3])}); keep one")
    return found[0]

  def under(self, prefix: str) -> list[str]:
    """Paths under folder `prefix` (recursively), sorted."""
    prefix = prefix.rstrip("/") + "/"
    return sorted(p for p in self.files if p.startswith(prefix))

  def where(self, rel: str) -> str:
    """How a message names `rel`: its disk path, or "archive:member"."""
    archive, member = self.files[rel]
    return str(self.root / rel) if archive is None else f"{self.root / archive}:{member}"

  def source(self, rel: str) -> str | None:
    """The archive (relative to the root) holding `rel`, or None for an extracted file."""
    return self.files[rel][0]

  # -- reading --------------------------------------------------------------------------------

  def read_bytes(self, rel: str, *, record: bool = True) -> bytes:
    """The bytes of `rel`; recorded (sha256) unless `record` is False."""
    if rel not in self.files:
      raise DataError(f"--raw {self.root}: missing file {rel}")
    archive, member = self.files[rel]
    try:
      if archive is None:
        data = (self.root / rel).read_bytes()
        if record:
          self.hashes.setdefault(rel, {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
        return data
      if archive in self._zips:
        return self._zips[archive].read(member)
      if member in self._tar_cache:
        return self._tar_cache[member]
    except (zipfile.BadZipFile, OSError, EOFError, zlib_error()) as e:
      raise DataError(f"{self.where(rel)}: cannot read it ({e}); the download is damaged") from None
    raise DataError(f"{self.where(rel)}: members of a tar archive are read in one pass; extract "
                    f"{self.root / archive} first")

  def read_text(self, rel: str, encoding: str = "utf-8") -> str:
    data = self.read_bytes(rel)
    try:
      return data.decode(encoding)
    except UnicodeDecodeError as e:
      raise DataError(f"{self.where(rel)}: not {encoding} text (byte {e.start}); the file is damaged") from None

  def lines(self, rel: str, encoding: str = "utf-8") -> Iterator[str]:
    """The lines of a (possibly large) text file without line ends (LF, CRLF or CR), streamed."""
    if rel not in self.files:
      raise DataError(f"--raw {self.root}: missing file {rel}")
    archive, member = self.files[rel]
    if archive is not None and archive not in self._zips:
      yield from self.read_text(rel, encoding).splitlines()
      return
    digest, size = hashlib.sha256(), 0
    try:
      raw = open(self.root / rel, "rb") if archive is None else self._zips[archive].open(member)
      with raw:
        for number, line in enumerate(raw, 1):
          digest.update(line)
          size += len(line)
          try:
            yield line.decode(encoding).rstrip("\r\n")
          except UnicodeDecodeError:
            raise DataError(f"{self.where(rel)}:{number}: not {encoding} text; the file is damaged") from None
    except (zipfile.BadZipFile, OSError, EOFError, zlib_error()) as e:
      raise DataError(f"{self.where(rel)}: cannot read it ({e}); the download is damaged") from None
    if archive is None:
      self.hashes.setdefault(rel, {"sha256": digest.hexdigest(), "bytes": size})

  def chunks(self, rel: str, size: int = _CHUNK) -> Iterator[bytes]:
    """The bytes of a (possibly large) file in blocks of `size`, streamed; an extracted file's
    sha256 is recorded once it has been read to the end (as `read_bytes` does)."""
    if rel not in self.files:
      raise DataError(f"--raw {self.root}: missing file {rel}")
    archive, member = self.files[rel]
    if archive is not None and archive not in self._zips:
      yield self.read_bytes(rel)
      return
    digest, total = hashlib.sha256(), 0
    try:
      raw = open(self.root / rel, "rb") if archive is None else self._zips[archive].open(member)
      with raw:
        while block := raw.read(size):
          digest.update(block)
          total += len(block)
          yield block
    except (zipfile.BadZipFile, OSError, EOFError, zlib_error()) as e:
      raise DataError(f"{self.where(rel)}: cannot read it ({e}); the download is damaged") from None
    if archive is None:
      self.hashes.setdefault(rel, {"sha256": digest.hexdigest(), "bytes": total})

  def magic(self, rel: str, n: int = 3) -> bytes:
    """The first `n` bytes of `rel` (images: checked, not hashed)."""
    archive, member = self.files[rel]
    try:
      if archive is None:
        with open(self.root / rel, "rb") as f:
          return f.read(n)
      if archive in self._zips:
        with self._zips[archive].open(member) as f:
          return f.read(n)
    except (zipfile.BadZipFile, OSError, EOFError, zlib_error()) as e:
      raise DataError(f"{self.where(rel)}: cannot read it ({e}); the download is damaged") from None
    return b""  # in a tar archive: not checked


def zlib_error():
  import zlib
  return zlib.error


# ---------------------------------------------------------------------------------------------
# Deterministic writers.


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
  """An .npz (stored, members in sorted order, fixed dates): same arrays, same bytes."""
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
    for name in sorted(arrays):
      member = io.BytesIO()
      np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
      info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
      info.external_attr = 0o644 << 16
      archive.writestr(info, member.getvalue())
  return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
  return buffer.getvalue()


def json_text(obj) -> str:
  return json.dumps(fileio.to_json(obj), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def lines_text(lines: Iterable[str]) -> str:
  return "".join(f"{line}\n" for line in lines)


def jsonl_text(rows: Iterable) -> str:
  return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


# ---------------------------------------------------------------------------------------------
# The work folder: resumable steps.

STATE = "state.json"
MANIFEST = "manifest.json"


def after_step(name: str) -> None:
  """Called after each finished step (tests replace it to simulate a crash between steps)."""


class Workspace:
  """`<out>.partial/`, where the steps of one preparation write; renamed to `<out>` when done.

  Args:
    out: the protocol folder to create.
    settings: JSON-able description of the run (dataset, raw root, rules); a `.partial` folder
      left by a run with other settings is discarded and started afresh.
    overwrite: replace an existing prepared folder (one holding a manifest.json).
  """

  def __init__(self, out, settings: dict, *, overwrite: bool = False):
    given = pathlib.Path(os.fspath(out)).expanduser()
    if given.is_symlink() or given.with_name(given.name + ".partial").is_symlink():
      raise UserError(f"--out {given}: is a symbolic link; give a real folder")
    self.out = fileio.resolve(given)
    self.partial = self.out.with_name(self.out.name + ".partial")
    self.settings = json.loads(json_text(settings))
    if self.out.exists():
      if not self.out.is_dir():
        raise UserError(f"--out {self.out} is a file, not a folder")
      if not (self.out / MANIFEST).is_file():
        if any(self.out.iterdir()):
          raise UserError(f"--out {self.out} exists and is not a prepared folder (no {MANIFEST}); choose another")
      elif not overwrite:
        raise UserError(f"--out {self.out} is already prepared; pass --overwrite to prepare it again")
    fileio.require_writable_dir(self.out.parent, what="--out's parent folder")
    self.done: list[str] = []
    state = self.partial / STATE
    if self.partial.exists():
      if not state.is_file():
        raise UserError(f"{self.partial} exists but was not left by jxhash prepare (no {STATE}); remove it")
      try:
        previous = json.loads(state.read_text())
      except (OSError, ValueError):
        previous = {}
      if previous.get("settings") == self.settings:
        self.done = list(previous.get("done", []))
      else:
        shutil.rmtree(self.partial)
    self.partial.mkdir(parents=True, exist_ok=True)
    self._save_state()

  def _save_state(self) -> None:
    fileio.atomic_write(self.partial / STATE, json_text({"settings": self.settings, "done": self.done}),
                        what="prepare state")

  def path(self, name: str) -> pathlib.Path:
    return self.partial / name

  def write(self, name: str, data: bytes | str) -> None:
    fileio.atomic_write(self.partial / name, data, what="prepared file")

  def run(self, name: str, fn: Callable[[], None]) -> bool:
    """Run step `name` unless a previous run finished it; True if it ran."""
    if name in self.done:
      return False
    fn()
    self.done.append(name)
    self._save_state()
    after_step(name)
    return True

  def finish(self, keep: Iterable[str]) -> pathlib.Path:
    """Remove everything but `keep` (the outputs) from the work folder and move it to `out`."""
    keep = set(keep)
    for path in sorted(self.partial.iterdir()):
      if path.name not in keep:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if self.out.exists():
      # only a prepared folder (checked in __init__) or an empty one gets here
      shutil.rmtree(self.out)
    os.replace(self.partial, self.out)
    return self.out
