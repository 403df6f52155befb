"""Read PyTorch `torch.save` checkpoints without PyTorch (`torch_writer.py` writes them).

`load_torch_file` reads the zip format written by `torch.save` (torch >= 1.6): a zip holding
`<archive>/data.pkl` (a protocol-2 pickle describing the object) and `<archive>/data/<key>`
(raw little-endian tensor storages). The pickle is run through a restricted unpickler that only
knows how to rebuild tensors and plain containers, so no code from the file can run; every tensor
comes back as a numpy array (bfloat16 and float8 via `ml_dtypes`).

Memory is bounded by what is read, never by what a file declares: tensors are first
`LazyTensor`s (shape and dtype), each layout is checked against the bytes its storage entry
really holds, and then (unless `lazy=True`) each is read on its own, in chunks, inflating nothing
beyond what it needs. Unpickling is bounded too (`_check_opcodes`, `_plain_globals`). The
converter loads lazily and reads only after checking every key and shape against the model.
"""

from __future__ import annotations

import collections
import contextlib
import io
import math
import os
import pickle
import pickletools
import zipfile
from typing import Any, BinaryIO, Iterator, Mapping, NamedTuple

import ml_dtypes
import numpy as np

from alitok_jax import errors

__all__ = ['LazyTensor', 'TorchFormatError', 'load_torch_file']


class TorchFormatError(errors.UserError, ValueError):
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
# Unpickling's bounds (data.pkl; torch_legacy's pickles too). State-dict pickles are well under
# 1 MiB: the AR B's (268 tensors) is 44 KB of 6,700 opcodes. Each opcode makes at most one object
# of at most ~250 bytes, and the allowed callables that copy (`set`, `_codecs.encode` ...) may copy
# `_MAX_PICKLE_COPIES` items in all, so unpickling takes at most ~100 MB.
_MAX_PICKLE_BYTES = 16 << 20
_MAX_PICKLE_OPS = 1 << 18
_MAX_PICKLE_COPIES = 1 << 20
_MAX_NDIM = 64  # torch's own limit on tensor dimensions
# A tensor may have more elements than its storage (a stride-0 `expand()`) only up to this size.
_MAX_BROADCAST_BYTES = 64 << 10
_CHUNK_BYTES = 4 << 20  # storages are read (and inflated) this much at a time
# Compressions whose inflation `zipfile` bounds per read (bzip2 and lzma inflate a whole chunk).
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


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
  """Checks that a pickled size/stride is a tuple of at most 64 non-negative ints."""
  ok = isinstance(value, (tuple, list)) and len(value) <= _MAX_NDIM and all(
      isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
  if not ok:
    raise TorchFormatError(f'tensor {what} {value!r} is not a tuple of non-negative ints')
  return tuple(value)


def _is_c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
  """Whether element strides are row-major for `shape` (dims of size 1 have any stride)."""
  expected = 1
  for n, s in zip(reversed(shape), reversed(strides)):
    if n != 1 and s != expected:
      return False
    expected *= n
  return True


class LazyTensor:
  """A checkpoint tensor not read yet: `shape`, `dtype`, `ndim`, `size` and `nbytes` only.

  `read()` (or `np.asarray(t)`) reads it into one new C-contiguous, writable array, reading only
  the bytes it spans. The loaders `check` every tensor before handing any out, so its layout is
  known to lie inside the bytes its storage really holds. `storages` is the file's storage
  reader (`size(location)`, `read(location, start, nbytes)`, `where`).
  """

  __hash__ = None  # type: ignore[assignment]  # like an ndarray: no set member, no dict key
  __slots__ = ('dtype', 'shape', 'element_strides', 'offset', 'ndim', 'size', 'nbytes', 'name',
               '_storages', '_location', '_storage_bytes', '_checked')

  def __init__(self, storages: Any, location: Any, storage_bytes: int, dtype: np.dtype,
               offset: Any, size: Any, stride: Any) -> None:
    shape, strides = _index_tuple(size, 'size'), _index_tuple(stride, 'stride')
    if len(shape) != len(strides) or not isinstance(offset, int) or offset < 0:
      raise TorchFormatError(f'bad tensor layout: offset {offset!r}, {size!r}, {stride!r}')
    self.dtype, self.shape, self.element_strides, self.offset = dtype, shape, strides, offset
    self.ndim, self.size = len(shape), math.prod(shape)
    self.nbytes = self.size * dtype.itemsize
    self._storages, self._location, self._storage_bytes = storages, location, storage_bytes
    self.name: str | None = None
    self._checked = False

  def __repr__(self) -> str:
    return f'LazyTensor({self.name}, shape={self.shape}, dtype={self.dtype})'

  def __setstate__(self, state: Any) -> None:  # a pickle BUILD must not rewrite a checked layout
    raise TorchFormatError('the pickle tries to set attributes of a tensor')

  def _last(self) -> int:
    """The storage item of the tensor's last element."""
    return self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.element_strides))

  def check(self, name: str) -> None:
    """Checks the layout against the bytes the storage holds; TorchFormatError naming `name`."""
    self.name, what = name, f'tensor {name}'
    try:
      stored = self._storages.size(self._location)
    except TorchFormatError as exc:  # a missing, truncated or unbounded storage entry
      raise TorchFormatError(f'{what}: {exc}') from None
    if stored < self._storage_bytes:
      raise TorchFormatError(f'{what} is truncated: its storage holds {stored} bytes, the pickle '
                             f'declares {self._storage_bytes}')
    itemsize = self.dtype.itemsize
    if self._storage_bytes % itemsize:
      raise TorchFormatError(f'{what}: a storage of {self._storage_bytes} bytes does not hold '
                             f'{self.dtype} items')
    items = self._storage_bytes // itemsize
    if self.size and self._last() >= items:  # never let as_strided read past the storage
      raise TorchFormatError(f'{what} of size {self.shape} stride {self.element_strides} offset '
                             f'{self.offset} overruns its storage of {items} items')
    if self.size > items and self.nbytes > _MAX_BROADCAST_BYTES:
      raise TorchFormatError(f'{what} of size {self.shape} has {self.size} elements but its '
                             f'storage only {items} (a stride-0 broadcast); real state dicts '
                             'never have one, so the file is corrupt or hostile')
    self._checked = True

  def read(self) -> np.ndarray:
    """The tensor as a C-contiguous numpy array (TorchFormatError naming file and tensor)."""
    if not self._checked:
      self.check(self.name or '(unnamed)')
    if self.size == 0:
      return np.empty(self.shape, self.dtype)
    itemsize = self.dtype.itemsize
    contiguous = _is_c_contiguous(self.shape, self.element_strides)
    span = self.size if contiguous else self._last() - self.offset + 1
    where = f'cannot load checkpoint {self._storages.where}: tensor {self.name}'
    try:
      raw = self._storages.read(self._location, self.offset * itemsize, span * itemsize)
    except TorchFormatError as exc:
      raise TorchFormatError(f'{where}: {exc}') from None
    except Exception as exc:  # zlib, CRC or I/O errors: a corrupt or truncated file
      raise TorchFormatError(f'{where}: the file is corrupt or truncated '
                             f'({type(exc).__name__}: {exc})') from exc
    flat = raw.view(self.dtype)
    if contiguous:
      return flat.reshape(self.shape)
    view = np.lib.stride_tricks.as_strided(
        flat, shape=self.shape, strides=[s * itemsize for s in self.element_strides])
    return view.copy()  # C-contiguous, writable, owns its memory

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    array = self.read()
    return array if dtype is None else array.astype(dtype, copy=False)


def _read_chunks(f: BinaryIO, skip: int, nbytes: int, what: str) -> np.ndarray:
  """Skips `skip` bytes of `f`, then reads exactly `nbytes`, a chunk at a time."""
  while skip > 0:
    skipped = len(f.read(min(skip, _CHUNK_BYTES)))
    if not skipped:
      raise TorchFormatError(f'{what} is truncated: it ends {skip} bytes before the tensor starts')
    skip -= skipped
  out = np.empty(nbytes, np.uint8)
  view, got = memoryview(out), 0
  while got < nbytes:
    n = f.readinto(view[got : got + _CHUNK_BYTES])
    if not n:
      raise TorchFormatError(f'{what} is truncated: it has {got} of the {nbytes} bytes to read')
    got += n
  return out


def _check_entry(info: zipfile.ZipInfo, file_size: int) -> None:
  """Refuses zip entries that could inflate unboundedly, or that end past the file."""
  if info.compress_type not in _COMPRESSIONS or info.flag_bits & 1:
    raise TorchFormatError(f'entry {info.filename!r} is encrypted or compressed with method '
                           f'{info.compress_type}; torch.save writes stored entries')
  if info.header_offset + info.compress_size > file_size:
    raise TorchFormatError(f'entry {info.filename!r} is truncated: it ends past the end of the '
                           'file')
  if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
    raise TorchFormatError(f'entry {info.filename!r} is corrupt: stored with {info.compress_size} '
                           f'bytes but declares {info.file_size}')


class _ZipStorages:
  """The storages (`<prefix>data/<key>`) of one zip checkpoint: sizes and chunked reads.

  Uses `zf` while the loader holds it open; after `release()` each read opens the file again.
  """

  def __init__(self, where: str, prefix: str, zf: zipfile.ZipFile) -> None:
    self.where, self._prefix, self._zf = where, prefix, zf
    self._file_size = os.path.getsize(where)

  def release(self) -> None:
    self._zf = None

  @contextlib.contextmanager
  def _archive(self) -> Iterator[zipfile.ZipFile]:
    if self._zf is not None:
      yield self._zf
    else:
      with zipfile.ZipFile(self.where) as zf:
        yield zf

  def _info(self, zf: zipfile.ZipFile, key: str) -> zipfile.ZipInfo:
    name = f'{self._prefix}data/{key}'
    try:
      info = zf.getinfo(name)
    except KeyError:
      raise TorchFormatError(f'the checkpoint is incomplete: storage entry {name!r} is missing '
                             '(truncated or corrupt file?)') from None
    _check_entry(info, self._file_size)
    return info

  def size(self, key: str) -> int:
    """The bytes entry `data/<key>` holds (its declared uncompressed size)."""
    with self._archive() as zf:
      return self._info(zf, key).file_size

  def read(self, key: str, start: int, nbytes: int) -> np.ndarray:
    """Bytes [start, start + nbytes) of entry `data/<key>`; inflates nothing beyond them."""
    with self._archive() as zf:
      info = self._info(zf, key)
      with zf.open(info) as f:
        return _read_chunks(f, start, nbytes, f'storage {info.filename!r}')


def _latin1_encode(text: Any, encoding: Any = 'latin1') -> bytes:
  """`_codecs.encode` as protocol 2 uses it for `bytes` values; only latin-1 is allowed."""
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise TorchFormatError(f'refusing _codecs.encode({type(text).__name__}, {encoding!r})')
  return text.encode('latin1')


def _check_opcodes(f: BinaryIO, where: str) -> None:
  """Refuses a pickle of more than `_MAX_PICKLE_OPS` opcodes (read from `f`'s position, which
  is then restored): a few bytes of opcodes can make hundreds of bytes of objects each."""
  start = f.tell()
  for count, _ in enumerate(pickletools.genops(f), 1):
    if count > _MAX_PICKLE_OPS:
      raise TorchFormatError(f'cannot load checkpoint {where}: its pickle has more than '
                             f'{_MAX_PICKLE_OPS} opcodes, far more than a state dict needs')
  f.seek(start)


def _plain_globals(where: str) -> dict[str, Any]:
  """The container globals a pickle may call, each charged against one `_MAX_PICKLE_COPIES`
  budget for what it copies (a memoised argument could otherwise be copied without bound)."""
  left = [_MAX_PICKLE_COPIES]

  def charged(fn: Any) -> Any:
    def call(*args: Any) -> Any:
      left[0] -= sum(len(a) for a in args if hasattr(a, '__len__'))
      if left[0] < 0:
        raise TorchFormatError(f'cannot load checkpoint {where}: its pickle copies more than '
                               f'{_MAX_PICKLE_COPIES} items, far more than a state dict needs')
      return fn(*args)
    return call

  return {'collections.OrderedDict': charged(collections.OrderedDict),
          'builtins.set': charged(set), 'builtins.frozenset': charged(frozenset),
          '_codecs.encode': charged(_latin1_encode)}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles `data.pkl`, resolving only tensor rebuilds (to `LazyTensor`s) and plain container
  globals."""

  def __init__(self, data: bytes, storages: _ZipStorages, where: str) -> None:
    stream = io.BytesIO(data)
    _check_opcodes(stream, where)
    super().__init__(stream)
    self._storages, self._where = storages, where
    self._allowed: dict[str, Any] = {
        'torch._utils._rebuild_tensor_v2': self._rebuild_tensor_v2,
        'torch._utils._rebuild_tensor_v3': self._rebuild_tensor_v3,
        'torch._utils._rebuild_parameter': _rebuild_parameter,
        'torch.storage.UntypedStorage': _StorageType(np.dtype(np.uint8)),
        **_plain_globals(where),
    }
    self._allowed.update({f'torch.{n}': _StorageType(d) for n, d in _STORAGE_DTYPES.items()})
    self._allowed.update({f'torch.{n}': _DType(d) for n, d in _V3_DTYPES.items()})

  def find_class(self, module: str, name: str) -> Any:
    module = 'builtins' if module == '__builtin__' else module  # protocol-2 spelling
    full = f'{module}.{name}'
    if full not in self._allowed:
      what = ('a TorchScript module (torch.jit.save): convert/torchscript.py reads those'
              if module.startswith('__torch__') else 'not a tensor rebuild')
      raise TorchFormatError(f'refusing to load checkpoint {self._where}: it asks to call '
                             f'{full!r}, {what}; only plain state dicts can be converted')
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

  def _tensor(self, storage: Any, offset: Any, size: Any, stride: Any,
              dtype: np.dtype) -> LazyTensor:
    if not isinstance(storage, _Storage):
      raise TorchFormatError(f'tensor rebuild got {type(storage).__name__}, not a storage')
    return LazyTensor(self._storages, storage.key, storage.numel * storage.dtype.itemsize, dtype,
                      offset, size, stride)

  # Signatures mirror torch._utils; requires_grad, hooks and metadata are dropped.
  def _rebuild_tensor_v2(self, storage: Any, offset: Any, size: Any, stride: Any,
                         *_grad_hooks_metadata: Any) -> LazyTensor:
    dtype = storage.dtype if isinstance(storage, _Storage) else np.dtype(np.uint8)
    return self._tensor(storage, offset, size, stride, dtype)

  def _rebuild_tensor_v3(self, storage: Any, offset: Any, size: Any, stride: Any,
                         _requires_grad: Any, _hooks: Any, dtype: Any,
                         *_metadata: Any) -> LazyTensor:
    if not isinstance(dtype, _DType):
      raise TorchFormatError(f'unsupported tensor dtype {dtype!r}')
    return self._tensor(storage, offset, size, stride, dtype.dtype)


def _rebuild_parameter(data: Any, *_grad_hooks: Any) -> LazyTensor:
  """`torch._utils._rebuild_parameter`: a Parameter is its tensor here."""
  if not isinstance(data, LazyTensor):
    raise TorchFormatError(f'Parameter wraps {type(data).__name__}, not a tensor')
  return data


def _named_tensors(obj: Any, name: str = '') -> Iterator[tuple[str, LazyTensor]]:
  """Every LazyTensor inside dicts, lists and tuples, with its dotted path ('model_state.w')."""
  if isinstance(obj, LazyTensor):
    yield name or '(the whole object)', obj
    return
  if isinstance(obj, Mapping):
    items = obj.items()
  elif isinstance(obj, (list, tuple)):
    items = enumerate(obj)
  else:
    return
  for key, value in items:
    yield from _named_tensors(value, f'{name}.{key}' if name else str(key))


def _check_tensors(obj: Any) -> None:
  """Checks every tensor's layout against its storage (nothing is read)."""
  for name, tensor in _named_tensors(obj):
    tensor.check(name)


def _materialise(obj: Any) -> Any:
  """`obj` with every LazyTensor read, one at a time (dicts and lists are updated in place)."""
  if isinstance(obj, LazyTensor):
    return obj.read()
  if isinstance(obj, dict):
    for key, value in obj.items():
      obj[key] = _materialise(value)
  elif isinstance(obj, list):
    obj[:] = [_materialise(v) for v in obj]
  elif type(obj) is tuple:
    return tuple(_materialise(v) for v in obj)
  return obj


def _read_capped(zf: zipfile.ZipFile, name: str, cap: int, where: str) -> bytes:
  """A small entry (`data.pkl`, `byteorder`), refused beyond `cap` bytes."""
  info = zf.getinfo(name)
  _check_entry(info, os.path.getsize(where))
  data = b''
  if info.file_size <= cap:
    with zf.open(info) as f:
      data = f.read(cap + 1)
  if info.file_size > cap or len(data) > cap:
    raise TorchFormatError(f'cannot load checkpoint {where}: {name} is larger than {cap} bytes, '
                           'far more than a state-dict pickle needs (they are well under 1 MiB)')
  return data


def load_torch_file(path: str | os.PathLike[str], *, lazy: bool = False,
                    unpickler: type[_RestrictedUnpickler] | None = None) -> Any:
  """Loads a `torch.save` zip checkpoint with every tensor as a numpy array.

  Returns the pickled structure (dicts, OrderedDicts, lists, numbers, strings ...) unchanged
  except that tensors and Parameters become C-contiguous numpy arrays of the same dtype and
  shape, or with `lazy=True` `LazyTensor`s: shapes and dtypes, layouts checked, nothing read.
  Raises TorchFormatError, naming the file, for anything else: a missing, truncated,
  corrupt, legacy-format or big-endian file, or a pickle that refers to any other global.
  `unpickler`: a subclass that knows more globals (`torchscript.py`'s module records).
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
      obj, storages = _load_zip(zf, where, unpickler or _RestrictedUnpickler)
      try:
        _check_tensors(obj)
        return obj if lazy else _materialise(obj)
      finally:
        storages.release()
  except TorchFormatError as exc:  # add the file name where a nested check left it out
    if where in str(exc):
      raise
    raise TorchFormatError(f'cannot load checkpoint {where}: {exc}') from None
  except Exception as exc:  # anything raised while parsing means a corrupt/unreadable file
    raise TorchFormatError(f'cannot load checkpoint {where}: the file is corrupt or truncated '
                           f'({type(exc).__name__}: {exc})') from exc


def _load_zip(zf: zipfile.ZipFile, where: str,
              unpickler: type[_RestrictedUnpickler]) -> tuple[Any, _ZipStorages]:
  """Finds `<archive>/data.pkl`, checks the byte order and unpickles (tensors stay lazy)."""
  names = zf.namelist()
  pickles = [n for n in names if n.endswith('/data.pkl') and n.count('/') == 1]
  pickles += [n for n in names if n == 'data.pkl']
  if not pickles:
    raise TorchFormatError(f'cannot load checkpoint {where}: it is a zip archive but not a '
                           "torch checkpoint (no '<archive>/data.pkl' entry)")
  prefix = pickles[0][: -len('data.pkl')]
  if f'{prefix}byteorder' in names:  # absent in files from torch < 1.12: little-endian
    order = _read_capped(zf, f'{prefix}byteorder', 16, where).strip()
    if order != b'little':
      endian = order.decode(errors='replace')
      raise TorchFormatError(f'cannot load checkpoint {where}: its storages are {endian}-endian; '
                             'only little-endian checkpoints are supported')
  storages = _ZipStorages(where, prefix, zf)
  data = _read_capped(zf, pickles[0], _MAX_PICKLE_BYTES, where)
  return unpickler(data, storages, where).load(), storages
