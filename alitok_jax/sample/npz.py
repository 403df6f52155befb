"""Writing large `.npz` files one chunk at a time, in the layout the OpenAI ADM evaluator reads.

The evaluator (guided-diffusion `evaluations/evaluator.py`) opens `arr_0` inside the zip and reads
it batch by batch; `np.load` reads the same file. 50k 256x256 images are 9.8 GB, so the array is
streamed into the zip entry shard by shard instead of being built in memory: an uncompressed
(ZIP_STORED, Zip64) entry holding a version-1.0 `.npy` header and the rows in C order.
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from typing import Iterable

import numpy as np

from alitok_jax.data import npy_files


class NpzWriter:
  """with NpzWriter(path) as w: w.write_array('arr_0', shape, dtype, chunks); ... (atomic)."""

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    self._tmp = self.path.with_name(self.path.name + '.tmp')
    self._zip: zipfile.ZipFile | None = None

  def __enter__(self) -> NpzWriter:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._zip = zipfile.ZipFile(self._tmp, 'w', compression=zipfile.ZIP_STORED, allowZip64=True)
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    self._zip.close()
    if exc_type is None:
      os.replace(self._tmp, self.path)
    else:
      self._tmp.unlink(missing_ok=True)

  def write_array(self, name: str, shape: tuple[int, ...], dtype, chunks: Iterable[np.ndarray]):
    """Writes `name`.npy of the given shape from chunks that stack along axis 0 to it."""
    dtype = np.dtype(dtype)
    header = {'descr': np.lib.format.dtype_to_descr(dtype), 'fortran_order': False,
              'shape': tuple(int(s) for s in shape)}
    rows = 0
    with self._zip.open(f'{name}.npy', 'w', force_zip64=True) as f:
      np.lib.format.write_array_header_1_0(f, header)
      for chunk in chunks:
        chunk = np.ascontiguousarray(chunk)
        if chunk.dtype != dtype or chunk.shape[1:] != tuple(shape[1:]):
          raise ValueError(f'{name}: chunk of {chunk.dtype} {list(chunk.shape)} does not fit '
                           f'{dtype} {list(shape)}')
        f.write(chunk.tobytes())
        rows += chunk.shape[0]
    if rows != shape[0]:
      raise ValueError(f'{name}: chunks gave {rows} rows, the header says {shape[0]}')


def array_shape(path: str | os.PathLike, name: str) -> tuple[int, ...] | None:
  """The shape of `name` in an .npz file, read from its header only (None if absent/unreadable,
  or when the entry holds fewer bytes than its header declares, e.g. a copy cut short)."""
  try:
    with zipfile.ZipFile(path) as z:
      info = z.getinfo(f'{name}.npy')
      with z.open(info) as f:
        header = npy_files.read_header(f, f'{path} ({name})')
    npy_files.check_size(f'{path} ({name})', header, info.file_size - header.data_offset)
    return header.shape
  except (OSError, KeyError, ValueError, zipfile.BadZipFile):
    return None
