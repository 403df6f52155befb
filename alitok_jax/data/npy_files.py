"""Opening .npy arrays (files, or members of an uncompressed npz) with their size checked first.

`np.load(path, mmap_mode='r')` of an .npy file whose header declares more rows than the file
holds (a copy cut short, a shard still being written) fails with numpy's "mmap length is greater
than file size", naming neither the file nor the rows; read into memory it fails with "EOF:
reading array data". Here the header is read first (`numpy.lib.format`: magic, then shape, dtype
and order), the bytes it declares compared with the bytes the file holds after it, and a short
file refused with one line that names the file, the rows declared and the rows present:

    codes/codes-000003.npy declares 5000 rows of 273 int16 but holds 3120: truncated or still
    being written? ...

Every memory-mapped array of the package is opened here: the code shards (`code_shards.py`) and
the images and features of ADM npz batches (`eval/reference_batch.py`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import BinaryIO

import numpy as np

from alitok_jax import errors


class NpyFileError(errors.UserError, ValueError):
  """An .npy file (or npz member) that is not a readable array, or holds less than it declares."""


@dataclasses.dataclass(frozen=True)
class NpyHeader:
  """What an .npy header declares; `data_offset` is where the data starts, from the header's
  first byte."""

  shape: tuple[int, ...]
  fortran_order: bool
  dtype: np.dtype
  data_offset: int

  @property
  def nbytes(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

  def describe(self) -> str:
    """'5000 rows of 273 int16', '7 float64 values', 'a float64 scalar'."""
    if not self.shape:
      return f'a {self.dtype} scalar'
    if len(self.shape) == 1:
      return f'{self.shape[0]} {self.dtype} values'
    return f'{self.shape[0]} rows of {"x".join(map(str, self.shape[1:]))} {self.dtype}'


def read_header(f: BinaryIO, name: str) -> NpyHeader:
  """The header of the .npy data starting at `f`'s position; `name` (the file) is for errors."""
  start = f.tell()
  try:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
      shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
    else:
      raise ValueError(f'npy format version {version[0]}.{version[1]} is not supported here '
                       '(np.save writes 1.0 or 2.0)')
  except (ValueError, EOFError, SyntaxError) as e:
    raise NpyFileError(f'{name} is not a readable .npy array ({e}): truncated, or not written by '
                       'np.save?') from None
  if dtype.hasobject:
    raise NpyFileError(f'{name} holds Python objects ({dtype}), which are not read (pickles); '
                       'save plain numeric arrays')
  return NpyHeader(tuple(int(n) for n in shape), bool(fortran_order), dtype, f.tell() - start)


def check_size(name: str, header: NpyHeader, available: int, hint: str = '') -> None:
  """Raises NpyFileError when the `available` bytes after the header hold less than declared."""
  if header.nbytes <= available:
    return
  available = max(available, 0)
  if len(header.shape) >= 1 and not header.fortran_order:  # C order: whole rows come first
    held = str(available // (header.nbytes // header.shape[0]))
  else:
    held = f'{available} of its {header.nbytes} bytes'
  raise NpyFileError(f'{name} declares {header.describe()} but holds {held}: truncated or still '
                     f'being written?{" " + hint if hint else ""}')


def memmap(path: str | os.PathLike, header: NpyHeader, offset: int, *,
           available: int | None = None, name: str | None = None,
           hint: str = '') -> np.ndarray:
  """The array whose data starts at byte `offset` of `path`, memory-mapped read-only.

  `available` bounds the bytes that belong to it (an npz member's size); the file's own size
  after `offset` always does. Empty arrays come back as zeros (nothing to map).
  """
  path = os.fspath(path)
  in_file = os.path.getsize(path) - offset
  check_size(name or path, header, in_file if available is None else min(available, in_file),
             hint)
  if header.nbytes == 0:
    return np.zeros(header.shape, header.dtype)
  if not header.shape:  # a scalar: nothing worth mapping
    return np.fromfile(path, dtype=header.dtype, count=1, offset=offset).reshape(())
  return np.memmap(path, dtype=header.dtype, mode='r', offset=offset, shape=header.shape,
                   order='F' if header.fortran_order else 'C')


def open_npy(path: str | os.PathLike, *, mmap: bool = True, hint: str = '') -> np.ndarray:
  """An .npy file, memory-mapped read-only (mmap=True) or read into memory, its size checked.

  Raises FileNotFoundError for a missing file and NpyFileError for one that is not an array or
  holds fewer bytes than its header declares (the message names the file and the rows; `hint`,
  e.g. how to remake the file, is appended).
  """
  path = os.fspath(path)
  with open(path, 'rb') as f:
    header = read_header(f, path)
    if not mmap:
      check_size(path, header, os.fstat(f.fileno()).st_size - header.data_offset, hint)
      count = int(np.prod(header.shape, dtype=np.int64))
      flat = np.fromfile(f, dtype=header.dtype, count=count)
      return flat.reshape(header.shape, order='F' if header.fortran_order else 'C')
  return memmap(path, header, header.data_offset, hint=hint)
