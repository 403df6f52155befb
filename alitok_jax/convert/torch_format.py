"""Read and write PyTorch `torch.save` checkpoints without PyTorch.

`load_torch_file` reads the zip format written by `torch.save` (torch >= 1.6): a zip holding
`<archive>/data.pkl` (a protocol-2 pickle describing the object) and `<archive>/data/<key>`
(raw little-endian tensor storages). The pickle is run through a restricted unpickler that only
knows how to rebuild tensors and plain containers, so no code from the file can run; every tensor
comes back as a numpy array (bfloat16 and float8 via `ml_dtypes`).

`save_torch_state_dict` writes a flat `{name: array}` mapping in the same format, with the
pickle opcodes written by hand (the standard Pickler cannot name torch functions without torch
imported) and every entry's data 64-byte aligned like torch does, so the result loads with
`torch.load(path)` (`weights_only=True`) and `torch.load(path, mmap=True)`.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import secrets
import struct
import zipfile
from typing import Any, BinaryIO, Mapping, NamedTuple

import ml_dtypes
import numpy as np

__all__ = ['TorchFormatError', 'load_torch_file', 'save_torch_state_dict']


class TorchFormatError(ValueError):
  """A file is not a checkpoint this module can read (or a state dict it cannot write)."""


# Legacy storage classes (`torch.FloatStorage` ...) used by `_rebuild_tensor_v2`.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    f'{kind}Storage': np.dtype(dtype)
    for kind, dtype in [
      ('Float', np.float32), ('Double', np.float64), ('Half', np.float16),
      ('BFloat16', ml_dtypes.bfloat16), ('Long', np.int64), ('Int', np.int32),
      ('Short', np.int16), ('Char', np.int8), ('Byte', np.uint8), ('Bool', np.bool_),
  ]
}
# Dtypes without a legacy storage class: torch 2.x writes them as `_rebuild_tensor_v3` over a
# `torch.storage.UntypedStorage` (bytes) plus a `torch.<dtype>` global.
_V3_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(getattr(np if name.startswith('uint') else ml_dtypes, name))
    for name in ('uint16', 'uint32', 'uint64', 'float8_e4m3fn', 'float8_e5m2')
}
_STORAGE_NAMES: dict[np.dtype, str] = {dtype: name for name, dtype in _STORAGE_DTYPES.items()}

# Pre-1.6 `torch.save` files start with a pickled magic number; its little-endian bytes.
_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, 'little')
_ALIGNMENT = 64  # torch's storage alignment inside the zip
_ARCHIVE = 'archive'


# Stand-ins for what the pickle may name. Being tuples they have no __dict__ and no
# __setstate__, so a pickle BUILD cannot alter them, and they are not callable.
class _StorageType(NamedTuple):
  """A `torch.*Storage` class (or `UntypedStorage`, as bytes)."""

  dtype: np.dtype


class _DType(NamedTuple):
  """A `torch.<dtype>` object (only those in `_V3_DTYPES`)."""

  dtype: np.dtype


class _Storage(NamedTuple):
  """A persistent-id storage reference: entry `data/<key>` holding `numel` items."""

  key: str
  dtype: np.dtype
  numel: int


def _index_tuple(value: Any, what: str) -> tuple[int, ...]:
  """Checks that a pickled size/stride is a tuple of non-negative ints."""
  ok = isinstance(value, (tuple, list)) and all(
      isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
  if not ok:
    raise TorchFormatError(f'tensor {what} {value!r} is not a tuple of non-negative ints')
  return tuple(value)


def _latin1_encode(text: Any, encoding: Any = 'latin1') -> bytes:
  """`_codecs.encode` as protocol 2 uses it for `bytes` values; only latin-1 is allowed."""
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise TorchFormatError(f'refusing _codecs.encode({type(text).__name__}, {encoding!r})')
  return text.encode('latin1')


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles `data.pkl`, resolving only tensor rebuilds and plain container globals."""

  def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str, where: str) -> None:
    super().__init__(io.BytesIO(data))
    self._zf, self._prefix, self._where = zf, prefix, where
    self._bytes: dict[str, bytes] = {}  # storage key -> raw bytes (storages can be shared)
    self._allowed: dict[str, Any] = {
        'collections.OrderedDict': collections.OrderedDict,
        'torch._utils._rebuild_tensor_v2': self._rebuild_tensor_v2,
        'torch._utils._rebuild_tensor_v3': self._rebuild_tensor_v3,
        'torch._utils._rebuild_parameter': self._rebuild_parameter,
        'torch.storage.UntypedStorage': _StorageType(np.dtype(np.uint8)),
        'builtins.set': set,
        'builtins.frozenset': frozenset,
        '_codecs.encode': _latin1_encode,
    }
    self._allowed.update({f'torch.{n}': _StorageType(d) for n, d in _STORAGE_DTYPES.items()})
    self._allowed.update({f'torch.{n}': _DType(d) for n, d in _V3_DTYPES.items()})

  def find_class(self, module: str, name: str) -> Any:
    module = 'builtins' if module == '__builtin__' else module  # protocol-2 spelling
    full = f'{module}.{name}'
    if full not in self._allowed:
      raise TorchFormatError(f'refusing to load checkpoint {self._where}: it asks to call '
                             f'{full!r}, which is not a tensor rebuild; only plain state '
                             'dicts can be converted')
    return self._allowed[full]

  def persistent_load(self, pid: Any) -> _Storage:
    # torch writes ('storage', storage_class, key, location, numel); location is ignored.
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'):
      raise TorchFormatError(f'unknown persistent id {pid!r}')
    _, storage_type, key, _location, numel = pid
    if not (isinstance(storage_type, _StorageType) and isinstance(key, str)
            and isinstance(numel, int) and numel >= 0):
      raise TorchFormatError(f'malformed storage reference {pid!r}')
    return _Storage(key, storage_type.dtype, numel)

  def _storage_bytes(self, storage: _Storage) -> bytes:
    """Raw bytes of `data/<key>`, read once per key and checked against its size."""
    if storage.key not in self._bytes:
      name = f'{self._prefix}data/{storage.key}'
      try:
        data = self._zf.read(name)
      except KeyError:
        raise TorchFormatError(f'checkpoint {self._where} is incomplete: storage entry '
                               f'{name!r} is missing (truncated or corrupt file?)') from None
      needed = storage.numel * storage.dtype.itemsize
      if len(data) < needed:
        raise TorchFormatError(f'checkpoint {self._where} is truncated: storage {name!r} has '
                               f'{len(data)} bytes, expected {needed}')
      self._bytes[storage.key] = data[:needed] if len(data) > needed else data
    return self._bytes[storage.key]

  def _tensor(self, storage: Any, offset: Any, size: Any, stride: Any,
              dtype: np.dtype) -> np.ndarray:
    """Views the storage with (offset, size, stride) in elements of `dtype`; copies it."""
    if not isinstance(storage, _Storage):
      raise TorchFormatError(f'tensor rebuild got {type(storage).__name__}, not a storage')
    shape, strides = _index_tuple(size, 'size'), _index_tuple(stride, 'stride')
    if len(shape) != len(strides) or not isinstance(offset, int) or offset < 0:
      raise TorchFormatError(f'bad tensor layout: offset {offset!r}, {size!r}, {stride!r}')
    raw = self._storage_bytes(storage)
    if len(raw) % dtype.itemsize:
      raise TorchFormatError(f'storage of {len(raw)} bytes does not hold {dtype} items')
    flat = np.frombuffer(raw, dtype=dtype)
    if 0 in shape:
      return np.empty(shape, dtype=dtype)
    last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
    if last >= flat.size:  # would read past the storage: never let as_strided do that
      raise TorchFormatError(f'tensor of size {shape} stride {strides} offset {offset} '
                             f'overruns its storage of {flat.size} items')
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=shape,
                                           strides=[s * dtype.itemsize for s in strides])
    return view.copy()  # C-contiguous, writable, owns its memory

  # Signatures mirror torch._utils; requires_grad, hooks and metadata are dropped.
  def _rebuild_tensor_v2(self, storage: Any, offset: Any, size: Any, stride: Any,
                         *_grad_hooks_metadata: Any) -> np.ndarray:
    dtype = storage.dtype if isinstance(storage, _Storage) else np.dtype(np.uint8)
    return self._tensor(storage, offset, size, stride, dtype)

  def _rebuild_tensor_v3(self, storage: Any, offset: Any, size: Any, stride: Any,
                         _requires_grad: Any, _hooks: Any, dtype: Any,
                         *_metadata: Any) -> np.ndarray:
    if not isinstance(dtype, _DType):
      raise TorchFormatError(f'unsupported tensor dtype {dtype!r}')
    return self._tensor(storage, offset, size, stride, dtype.dtype)

  @staticmethod
  def _rebuild_parameter(data: Any, *_grad_hooks: Any) -> np.ndarray:
    if not isinstance(data, np.ndarray):
      raise TorchFormatError(f'Parameter wraps {type(data).__name__}, not a tensor')
    return data


def load_torch_file(path: str | os.PathLike[str]) -> Any:
  """Loads a `torch.save` zip checkpoint with every tensor as a numpy array.

  Returns the pickled structure (dicts, OrderedDicts, lists, numbers, strings ...) unchanged
  except that tensors and Parameters become C-contiguous numpy arrays of the same dtype and
  shape. Raises TorchFormatError, naming the file, for anything else: a missing, truncated,
  corrupt, legacy-format or big-endian file, or a pickle that refers to any other global.
  """
  where = os.fspath(path)
  if not os.path.exists(where):
    raise TorchFormatError(f'cannot load checkpoint {where}: file does not exist')
  if not os.path.isfile(where):
    raise TorchFormatError(f'cannot load checkpoint {where}: not a regular file')
  try:
    with open(where, 'rb') as f:
      head = f.read(32)
    if _LEGACY_MAGIC in head:
      raise TorchFormatError(f'cannot load checkpoint {where}: it uses the legacy (pre-1.6) '
                             'torch.save format; re-save it with a newer torch: '
                             'torch.save(torch.load(f), g)')
    if not zipfile.is_zipfile(where):
      why = ('it starts like a zip archive but has no end-of-archive record (truncated file?)'
             if head.startswith(b'PK\x03\x04')
             else 'it is not a zip archive, so not a checkpoint written by torch.save')
      raise TorchFormatError(f'cannot load checkpoint {where}: {why}')
    with zipfile.ZipFile(where) as zf:
      return _load_zip(zf, where)
  except TorchFormatError as exc:  # add the file name where a nested check left it out
    if where in str(exc):
      raise
    raise TorchFormatError(f'cannot load checkpoint {where}: {exc}') from None
  except Exception as exc:  # anything raised while parsing means a corrupt/unreadable file
    raise TorchFormatError(f'cannot load checkpoint {where}: the file is corrupt or truncated '
                           f'({type(exc).__name__}: {exc})') from exc


def _load_zip(zf: zipfile.ZipFile, where: str) -> Any:
  """Finds `<archive>/data.pkl`, checks the byte order and unpickles."""
  names = zf.namelist()
  pickles = [n for n in names if n.endswith('/data.pkl') and n.count('/') == 1]
  pickles += [n for n in names if n == 'data.pkl']
  if not pickles:
    raise TorchFormatError(f'cannot load checkpoint {where}: it is a zip archive but not a '
                           "torch checkpoint (no '<archive>/data.pkl' entry)")
  prefix = pickles[0][: -len('data.pkl')]
  if f'{prefix}byteorder' in names:  # absent in files from torch < 1.12: little-endian
    order = zf.read(f'{prefix}byteorder').strip()
    if order != b'little':
      endian = order.decode(errors='replace')
      raise TorchFormatError(f'cannot load checkpoint {where}: its storages are {endian}-endian; '
                             'only little-endian checkpoints are supported')
  return _RestrictedUnpickler(zf.read(pickles[0]), zf, prefix, where).load()


# --- writing --------------------------------------------------------------------------------


def _pickle_int(n: int) -> bytes:
  if 0 <= n < 256:
    return b'K' + bytes([n])  # BININT1
  if -(2**31) <= n < 2**31:
    return b'J' + struct.pack('<i', n)  # BININT
  raw = n.to_bytes(n.bit_length() // 8 + 1, 'little', signed=True)
  return b'\x8a' + bytes([len(raw)]) + raw  # LONG1


def _pickle_str(s: str) -> bytes:
  raw = s.encode('utf-8')
  return b'X' + struct.pack('<I', len(raw)) + raw  # BINUNICODE


def _pickle_global(module: str, name: str) -> bytes:
  return b'c' + f'{module}\n{name}\n'.encode('ascii')  # GLOBAL


def _pickle_tuple(items: list[bytes]) -> bytes:
  return b'(' + b''.join(items) + b't'  # MARK ... TUPLE


_EMPTY_ORDERED_DICT = _pickle_global('collections', 'OrderedDict') + b')R'  # OrderedDict()


def _state_dict_pickle(tensors: list[tuple[str, np.ndarray, str]]) -> bytes:
  """Protocol-2 pickle of `OrderedDict(name -> tensor)`; tensor `i` lives in `data/i`."""
  out = [b'\x80\x02', _EMPTY_ORDERED_DICT, b'(']  # PROTO 2, the dict, MARK for SETITEMS
  for i, (name, arr, storage_name) in enumerate(tensors):
    # Contiguous strides in elements, as torch computes them (size-0 dims count as 1).
    strides = [int(np.prod([max(n, 1) for n in arr.shape[d + 1 :]])) for d in range(arr.ndim)]
    storage_id = _pickle_tuple([
        _pickle_str('storage'), _pickle_global('torch', storage_name),
        _pickle_str(str(i)), _pickle_str('cpu'), _pickle_int(arr.size),
    ])
    args = _pickle_tuple([
        storage_id + b'Q',  # BINPERSID: the storage
        _pickle_int(0),  # storage offset
        _pickle_tuple([_pickle_int(n) for n in arr.shape]),
        _pickle_tuple([_pickle_int(s) for s in strides]),
        b'\x89',  # requires_grad False
        _EMPTY_ORDERED_DICT,  # backward hooks
    ])
    out += [_pickle_str(name), _pickle_global('torch._utils', '_rebuild_tensor_v2'), args, b'R']
  out.append(b'u.')  # SETITEMS, STOP
  return b''.join(out)


def _write_entry(zf: zipfile.ZipFile, f: BinaryIO, name: str, payload: bytes | np.ndarray) -> None:
  """Writes one stored entry, its data 64-byte aligned by padding the local header's extra
  field (id `FB`, filled with `Z`) exactly as torch does."""
  data = payload if isinstance(payload, bytes) else payload.reshape(-1).view(np.uint8)
  info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
  info.compress_type = zipfile.ZIP_STORED
  info.file_size = len(data)
  zip64 = len(data) * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own test: adds a 20-byte extra
  header = 30 + len(name.encode('utf-8')) + 4 + (20 if zip64 else 0)
  pad = -(f.tell() + header) % _ALIGNMENT  # zipfile writes the next header at f.tell()
  info.extra = b'FB' + struct.pack('<H', pad) + b'Z' * pad
  with zf.open(info, 'w', force_zip64=zip64) as dst:
    for start in range(0, len(data), 1 << 26):  # 64 MiB at a time, no full copy
      dst.write(data[start : start + (1 << 26)])


def save_torch_state_dict(path: str | os.PathLike[str],
                          state_dict: Mapping[str, np.ndarray]) -> None:
  """Writes `{name: array}` so that `torch.load` gives `OrderedDict[str, Tensor]`.

  Supported dtypes: float32/64, float16, bfloat16, int64/32/16/8, uint8 and bool. The file is
  written to a temporary name next to `path` and then renamed over it.
  """
  tensors: list[tuple[str, np.ndarray, str]] = []
  for name, value in state_dict.items():
    if not isinstance(name, str):
      raise TorchFormatError(f'state dict keys must be strings, got {name!r}')
    arr = np.asarray(value)
    if arr.dtype.byteorder == '>':  # storages are little-endian (as is every host we run on)
      arr = arr.astype(arr.dtype.newbyteorder('<'))
    storage_name = _STORAGE_NAMES.get(arr.dtype)
    if storage_name is None:
      raise TorchFormatError(f'cannot save {name!r}: dtype {arr.dtype} has no torch storage')
    tensors.append((name, np.asarray(arr, order='C'), storage_name))

  entries: list[tuple[str, bytes | np.ndarray]] = [
      ('data.pkl', _state_dict_pickle(tensors)),
      ('.format_version', b'1'),
      ('.storage_alignment', str(_ALIGNMENT).encode()),
      ('byteorder', b'little'),
  ]
  entries += [(f'data/{i}', arr) for i, (_, arr, _) in enumerate(tensors)]
  entries.append(('version', b'3\n'))

  target = os.fspath(path)
  tmp = f'{target}.tmp.{os.getpid()}.{secrets.token_hex(4)}'
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like open()
  try:
    with os.fdopen(fd, 'wb') as f:
      with zipfile.ZipFile(f, 'w', compression=zipfile.ZIP_STORED) as zf:
        for entry, payload in entries:
          _write_entry(zf, f, f'{_ARCHIVE}/{entry}', payload)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, target)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
