"""Read PyTorch's legacy (pre-1.6, non-zip) `torch.save` format without PyTorch.

The weights of the evaluation networks are old files in this format: torchvision's
`vgg16-397923af.pth` (LPIPS trunk), LPIPS's `weights/v0.1/vgg.pth` (LPIPS linear layers) and
pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`. `load_any` reads either format: zip files
go to `torch_format.load_torch_file`, legacy ones are read here.

A legacy file is a sequence of pickles followed by raw storages (torch's `_legacy_save`):
  magic number (0x1950a86a20f9469cfc6c), protocol version (1001), system info (byte order, sizes),
  the object (storages appear as persistent ids
    ('storage', storage class, key, location, numel, view or None)),
  the sorted list of storage keys, then per key: numel as int64 and numel items of raw data.
The pickles are read from at most the file's first `torch_format._MAX_PICKLE_BYTES`, their
opcodes counted, and run through restricted unpicklers (the object's knows only tensor rebuilds
and plain containers, the same list and bounds as `torch_format`). Tensors are `torch_format.LazyTensor`s: where each storage lies is
computed from the declared sizes and checked against the file's size before anything is read,
then every layout is checked against its storage, and only then (unless `lazy=True`) is each
tensor read, on its own, in chunks.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import struct
from typing import Any, BinaryIO, Iterator, NamedTuple

import numpy as np

from alitok_jax.convert import torch_format
from alitok_jax.convert.torch_format import LazyTensor, TorchFormatError

__all__ = ['is_legacy_file', 'load_any', 'load_legacy_torch_file']

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
_DTYPES = torch_format._STORAGE_DTYPES  # 'FloatStorage' -> float32, ...
_MAX_PICKLE_BYTES = torch_format._MAX_PICKLE_BYTES


class _StorageType(NamedTuple):
  dtype: np.dtype


class _Storage(NamedTuple):
  """A persistent-id storage: `numel` items of root storage `key` from item `offset` on."""

  key: str
  dtype: np.dtype
  offset: int
  numel: int


class _FileStorages:
  """The root storages after the pickles: where each one's data starts, and chunked reads.

  A tensor's location is (root key, byte offset of its storage view, bytes of the view).
  """

  def __init__(self, where: str) -> None:
    self.where = where
    self.starts: dict[str, int] = {}  # root key -> file offset of its data (set by `_layout`)
    self._f: BinaryIO | None = None

  @contextlib.contextmanager
  def held(self) -> Iterator[None]:
    """Keeps the file open for the reads inside the block."""
    with open(self.where, 'rb') as f:
      self._f = f
      try:
        yield
      finally:
        self._f = None

  @contextlib.contextmanager
  def _file(self) -> Iterator[BinaryIO]:
    if self._f is not None:
      yield self._f
    else:
      with open(self.where, 'rb') as f:
        yield f

  def size(self, location: tuple[str, int, int]) -> int:
    return location[2]  # `_layout` has checked that every root storage lies inside the file

  def read(self, location: tuple[str, int, int], start: int, nbytes: int) -> np.ndarray:
    key, view_start, _ = location
    with self._file() as f:
      f.seek(self.starts[key] + view_start + start)
      return torch_format._read_chunks(f, 0, nbytes, f'storage {key}')

  def count(self, key: str) -> int:
    """The item count written before root storage `key`'s data."""
    with self._file() as f:
      f.seek(self.starts[key] - 8)
      return struct.unpack('<q', f.read(8))[0]


class _PlainUnpickler(pickle.Unpickler):
  """Header pickles: numbers, strings and dicts only."""

  def find_class(self, module: str, name: str) -> Any:
    raise TorchFormatError(f'refusing {module}.{name} in a checkpoint header')


class _LegacyUnpickler(pickle.Unpickler):
  """The object pickle: tensor rebuilds become `LazyTensor`s, storages are recorded."""

  def __init__(self, f: BinaryIO, where: str, storages: _FileStorages):
    torch_format._check_opcodes(f, where)
    super().__init__(f)
    self._where, self._storages = where, storages
    self.roots: dict[str, tuple[np.dtype, int]] = {}  # key -> (dtype, numel of the root storage)
    self._allowed: dict[str, Any] = {
        'torch._utils._rebuild_tensor': self._rebuild_tensor,
        'torch._utils._rebuild_tensor_v2': self._rebuild_tensor,
        'torch._utils._rebuild_parameter': torch_format._rebuild_parameter,
        **torch_format._plain_globals(where),
    }
    self._allowed.update({f'torch.{n}': _StorageType(d) for n, d in _DTYPES.items()})

  def find_class(self, module: str, name: str) -> Any:
    module = 'builtins' if module == '__builtin__' else module
    full = f'{module}.{name}'
    if full not in self._allowed:
      raise TorchFormatError(f'refusing to load checkpoint {self._where}: it asks to call '
                             f'{full!r}, which is not a tensor rebuild; only plain state dicts '
                             'can be converted')
    return self._allowed[full]

  def persistent_load(self, pid: Any) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == 'storage'):
      raise TorchFormatError(f'unknown persistent id {pid!r}')
    _, storage_type, key, _location, numel, view = pid
    if not (isinstance(storage_type, _StorageType) and isinstance(key, str)
            and isinstance(numel, int) and numel >= 0):
      raise TorchFormatError(f'malformed storage reference {pid!r}')
    known = self.roots.setdefault(key, (storage_type.dtype, numel))
    if known != (storage_type.dtype, numel):
      raise TorchFormatError(f'storage {key} is described twice, differently')
    if view is None:
      return _Storage(key, storage_type.dtype, 0, numel)
    _view_key, offset, view_numel = view
    if not (isinstance(offset, int) and isinstance(view_numel, int) and offset >= 0
            and view_numel >= 0 and offset + view_numel <= numel):
      raise TorchFormatError(f'malformed storage view {view!r} of a storage of {numel} items')
    return _Storage(key, storage_type.dtype, offset, view_numel)

  def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any,
                      *_rest: Any) -> LazyTensor:
    if not isinstance(storage, _Storage):
      raise TorchFormatError(f'tensor rebuild got {type(storage).__name__}, not a storage')
    itemsize = storage.dtype.itemsize
    nbytes = storage.numel * itemsize
    location = (storage.key, storage.offset * itemsize, nbytes)
    return LazyTensor(self._storages, location, nbytes, storage.dtype, offset, size, stride)


def _plain_load(head: BinaryIO, where: str) -> Any:
  """One header pickle (opcodes counted first)."""
  torch_format._check_opcodes(head, where)
  return _PlainUnpickler(head).load()


def _read_pickles(head: BinaryIO, where: str, storages: _FileStorages) -> tuple[Any, Any, dict]:
  """(the object, the storage key list, {root key: (dtype, numel)}) from the file's pickles."""
  magic, protocol, sys_info = (_plain_load(head, where) for _ in range(3))
  if magic != _MAGIC:
    raise TorchFormatError(f'{where} is not a torch checkpoint (bad magic number)')
  if protocol != _PROTOCOL:
    raise TorchFormatError(f'{where}: unsupported legacy protocol version {protocol!r}')
  if not isinstance(sys_info, dict) or not sys_info.get('little_endian', False):
    raise TorchFormatError(f'{where}: only little-endian checkpoints are supported')
  unpickler = _LegacyUnpickler(head, where, storages)
  obj = unpickler.load()
  return obj, _plain_load(head, where), unpickler.roots


def _layout(keys: Any, roots: dict[str, tuple[np.dtype, int]], start: int, file_size: int,
            where: str) -> dict[str, int]:
  """Where each root storage's data starts; refuses a file too short to hold them all."""
  if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
    raise TorchFormatError(f'{where}: the storage key list is malformed')
  if len(set(keys)) != len(keys) or set(keys) != set(roots):
    raise TorchFormatError(f'{where}: the storage list does not match the tensors '
                           f'({len(keys)} listed, {len(roots)} referenced)')
  starts, end = {}, start
  for key in keys:
    dtype, numel = roots[key]
    starts[key] = end + 8  # after its int64 item count
    end = starts[key] + numel * dtype.itemsize
    if end > file_size:
      raise TorchFormatError(f'{where} is truncated: storage {key} ({numel} {dtype} items) would '
                             f'end at byte {end}, but the file has {file_size} bytes')
  return starts


def is_legacy_file(path: str | os.PathLike[str]) -> bool:
  """True when the file starts with the legacy format's pickled magic number."""
  with open(path, 'rb') as f:
    return torch_format._LEGACY_MAGIC in f.read(32)


def _unpickle_head(where: str, storages: _FileStorages) -> tuple[Any, Any, dict, int]:
  """The pickles from the file's first `_MAX_PICKLE_BYTES`: (object, storage keys, roots, the
  offset where the storages begin)."""
  with open(where, 'rb') as f:
    raw = f.read(_MAX_PICKLE_BYTES)
  head = io.BytesIO(raw)
  try:
    obj, keys, roots = _read_pickles(head, where, storages)
  except TorchFormatError:
    raise
  except (EOFError, ValueError, pickle.UnpicklingError):  # out of bytes: cut off at the cap?
    if len(raw) < _MAX_PICKLE_BYTES:
      raise
    raise TorchFormatError(f'cannot load checkpoint {where}: its pickles do not end within the '
                           f'first {_MAX_PICKLE_BYTES} bytes, far more than a state dict needs '
                           '(well under 1 MiB)') from None
  return obj, keys, roots, head.tell()


def _check_counts(storages: _FileStorages, roots: dict[str, tuple[np.dtype, int]],
                  where: str) -> None:
  """The item count written before each storage matches what its tensors declare."""
  for key, (_, numel) in roots.items():
    stored = storages.count(key)
    if stored != numel:
      raise TorchFormatError(f'{where}: storage {key} holds {stored} items, its tensors '
                             f'expect {numel}')


def load_legacy_torch_file(path: str | os.PathLike[str], *, lazy: bool = False) -> Any:
  """Loads a legacy-format `torch.save` file; tensors come back as numpy arrays, or with
  `lazy=True` as `LazyTensor`s (layouts checked against the file, nothing read)."""
  where = os.fspath(path)
  try:
    storages = _FileStorages(where)
    obj, keys, roots, end = _unpickle_head(where, storages)
    storages.starts = _layout(keys, roots, end, os.path.getsize(where), where)
    with storages.held():
      _check_counts(storages, roots, where)
      torch_format._check_tensors(obj)
      return obj if lazy else torch_format._materialise(obj)
  except TorchFormatError as exc:
    if where in str(exc):
      raise
    raise TorchFormatError(f'cannot load checkpoint {where}: {exc}') from None
  except Exception as exc:  # a parse failure anywhere means a corrupt or truncated file
    raise TorchFormatError(f'cannot load checkpoint {where}: the file is corrupt or truncated '
                           f'({type(exc).__name__}: {exc})') from exc


def load_any(path: str | os.PathLike[str], *, lazy: bool = False) -> Any:
  """Loads a `torch.save` file of either format (zip, torch >= 1.6; or legacy); `lazy` as in
  `torch_format.load_torch_file`."""
  where = os.fspath(path)
  if os.path.isfile(where) and is_legacy_file(where):
    return load_legacy_torch_file(where, lazy=lazy)
  return torch_format.load_torch_file(where, lazy=lazy)
