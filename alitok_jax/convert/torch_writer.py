"""Write PyTorch `torch.save` checkpoints without PyTorch (`torch_format.py` reads them).

`save_torch_state_dict` writes a flat `{name: array}` mapping in torch's zip format, with the
pickle opcodes written by hand (the standard Pickler cannot name torch functions without torch
imported) and every entry's data 64-byte aligned like torch does, so the result loads with
`torch.load(path)` (`weights_only=True`) and `torch.load(path, mmap=True)`.
"""

from __future__ import annotations

import os
import secrets
import struct
import zipfile
from typing import BinaryIO, Mapping

import numpy as np

from alitok_jax.convert.torch_format import _ALIGNMENT, _ARCHIVE, _STORAGE_NAMES, TorchFormatError

__all__ = ['save_torch_state_dict']


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
