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
The object pickle is run through a restricted unpickler that knows only tensor rebuilds and plain
containers (the same list as `torch_format`); tensors stay placeholders until the storages behind
the pickle have been read, then become C-contiguous numpy arrays.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from alitok_jax.convert import torch_format
from alitok_jax.convert.torch_format import TorchFormatError

__all__ = ['is_legacy_file', 'load_any', 'load_legacy_torch_file']

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
_DTYPES = torch_format._STORAGE_DTYPES  # 'FloatStorage' -> float32, ...


class _StorageType(NamedTuple):
  dtype: np.dtype


class _Storage(NamedTuple):
  """A persistent-id storage: `numel` items of root storage `key` from item `offset` on."""

  key: str
  dtype: np.dtype
  offset: int
  numel: int


class _Pending(NamedTuple):
  """A tensor whose storage bytes come after the pickle."""

  storage: _Storage
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
  ok = isinstance(value, (tuple, list)) and all(
      isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
  if not ok:
    raise TorchFormatError(f'tensor {what} {value!r} is not a tuple of non-negative ints')
  return tuple(value)


class _PlainUnpickler(pickle.Unpickler):
  """Header pickles: numbers, strings and dicts only."""

  def find_class(self, module: str, name: str) -> Any:
    raise TorchFormatError(f'refusing {module}.{name} in a checkpoint header')


class _LegacyUnpickler(pickle.Unpickler):
  """The object pickle: tensor rebuilds become `_Pending`, storages are recorded."""

  def __init__(self, f: BinaryIO, where: str):
    super().__init__(f)
    self._where = where
    self.roots: dict[str, tuple[np.dtype, int]] = {}  # key -> (dtype, numel of the root storage)
    self._allowed: dict[str, Any] = {
        'collections.OrderedDict': collections.OrderedDict,
        'torch._utils._rebuild_tensor': self._rebuild_tensor,
        'torch._utils._rebuild_tensor_v2': self._rebuild_tensor,
        'torch._utils._rebuild_parameter': self._rebuild_parameter,
        'builtins.set': set,
        'builtins.frozenset': frozenset,
        '_codecs.encode': torch_format._latin1_encode,
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

  @staticmethod
  def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> _Pending:
    if not isinstance(storage, _Storage):
      raise TorchFormatError(f'tensor rebuild got {type(storage).__name__}, not a storage')
    if not isinstance(offset, int) or offset < 0:
      raise TorchFormatError(f'bad tensor storage offset {offset!r}')
    size, stride = _int_tuple(size, 'size'), _int_tuple(stride, 'stride')
    if len(size) != len(stride):
      raise TorchFormatError(f'tensor size {size} and stride {stride} differ in length')
    return _Pending(storage, offset, size, stride)

  @staticmethod
  def _rebuild_parameter(data: Any, *_rest: Any) -> Any:
    if not isinstance(data, _Pending):
      raise TorchFormatError(f'Parameter wraps {type(data).__name__}, not a tensor')
    return data


def _tensor(p: _Pending, roots: dict[str, np.ndarray]) -> np.ndarray:
  flat = roots[p.storage.key][p.storage.offset:p.storage.offset + p.storage.numel]
  if 0 in p.size:
    return np.empty(p.size, flat.dtype)
  last = p.offset + sum((n - 1) * s for n, s in zip(p.size, p.stride))
  if last >= flat.size:  # never let as_strided read past the storage
    raise TorchFormatError(f'tensor of size {p.size} stride {p.stride} offset {p.offset} '
                           f'overruns its storage of {flat.size} items')
  view = np.lib.stride_tricks.as_strided(flat[p.offset:], shape=p.size,
                                         strides=[s * flat.itemsize for s in p.stride])
  return view.copy()


def _materialise(obj: Any, roots: dict[str, np.ndarray]) -> Any:
  """Replaces every `_Pending` inside containers by its numpy array."""
  if isinstance(obj, _Pending):
    return _tensor(obj, roots)
  if isinstance(obj, dict):
    out = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
    for k, v in obj.items():
      out[k] = _materialise(v, roots)
    return out
  if isinstance(obj, list):
    return [_materialise(v, roots) for v in obj]
  if isinstance(obj, tuple) and not hasattr(obj, '_fields'):
    return tuple(_materialise(v, roots) for v in obj)
  return obj


def _read_storages(f: BinaryIO, keys: Any, recorded: dict[str, tuple[np.dtype, int]],
                   where: str) -> dict[str, np.ndarray]:
  if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
    raise TorchFormatError(f'{where}: the storage key list is malformed')
  if set(keys) != set(recorded):
    raise TorchFormatError(f'{where}: the storage list does not match the tensors '
                           f'({len(keys)} listed, {len(recorded)} referenced)')
  roots = {}
  for key in keys:
    dtype, numel = recorded[key]
    head = f.read(8)
    if len(head) != 8:
      raise TorchFormatError(f'{where} is truncated: storage {key} is missing')
    stored = struct.unpack('<q', head)[0]
    if stored != numel:
      raise TorchFormatError(f'{where}: storage {key} holds {stored} items, its tensors '
                             f'expect {numel}')
    buf = np.empty(numel, dtype)
    got = f.readinto(memoryview(buf.view(np.uint8)))
    if got != buf.nbytes:
      raise TorchFormatError(f'{where} is truncated: storage {key} has {got} of '
                             f'{buf.nbytes} bytes')
    roots[key] = buf
  return roots


def is_legacy_file(path: str | os.PathLike[str]) -> bool:
  """True when the file starts with the legacy format's pickled magic number."""
  with open(path, 'rb') as f:
    return torch_format._LEGACY_MAGIC in f.read(32)


def load_legacy_torch_file(path: str | os.PathLike[str]) -> Any:
  """Loads a legacy-format `torch.save` file; tensors come back as numpy arrays."""
  where = os.fspath(path)
  try:
    with open(where, 'rb') as f:
      magic, protocol, sys_info = (_PlainUnpickler(f).load() for _ in range(3))
      if magic != _MAGIC:
        raise TorchFormatError(f'{where} is not a torch checkpoint (bad magic number)')
      if protocol != _PROTOCOL:
        raise TorchFormatError(f'{where}: unsupported legacy protocol version {protocol!r}')
      if not isinstance(sys_info, dict) or not sys_info.get('little_endian', False):
        raise TorchFormatError(f'{where}: only little-endian checkpoints are supported')
      unpickler = _LegacyUnpickler(f, where)
      obj = unpickler.load()
      keys = _PlainUnpickler(f).load()
      roots = _read_storages(f, keys, unpickler.roots, where)
    return _materialise(obj, roots)
  except TorchFormatError as exc:
    if where in str(exc):
      raise
    raise TorchFormatError(f'cannot load checkpoint {where}: {exc}') from None
  except Exception as exc:  # a parse failure anywhere means a corrupt or truncated file
    raise TorchFormatError(f'cannot load checkpoint {where}: the file is corrupt or truncated '
                           f'({type(exc).__name__}: {exc})') from exc


def load_any(path: str | os.PathLike[str]) -> Any:
  """Loads a `torch.save` file of either format (zip, torch >= 1.6; or legacy)."""
  where = os.fspath(path)
  if os.path.isfile(where) and is_legacy_file(where):
    return load_legacy_torch_file(where)
  return torch_format.load_torch_file(where)
