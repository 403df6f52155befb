"""Pretokenized codes on disk: shards written once, then streamed to AR training with grain.

The reference (`pretokenization.py`) encodes every training image's ten crops once and the AR
model trains on codes (ALITOK_REFERENCE.md section 3). Here each crop's 273 codes are one
example. A shard k is a pair of .npy files in one directory:

    codes-NNNNNN.npy    int16 [n, 273] (int32 when a code exceeds 32767)
    labels-NNNNNN.npy   int16 [n] (int32 when needed)

written atomically (temporary names, then renames; the labels file, renamed last, marks a shard
complete), so a pretokenization job killed mid-write leaves no half shard behind and can resume
by skipping `list_shards(directory)`. Readers memory-map the codes (`npy_files.open_npy`, which
checks each file holds the rows its header declares and names the file when it does not).
"""

from __future__ import annotations

import bisect
import os
import pathlib
import re

import numpy as np

from alitok_jax.data import loader, npy_files

_CODES = 'codes-{:06d}.npy'
_LABELS = 'labels-{:06d}.npy'
_LABELS_RE = re.compile(r'^labels-(\d{6})\.npy$')


def _compact(values: np.ndarray, what: str) -> np.ndarray:
  values = np.asarray(values)
  if not np.issubdtype(values.dtype, np.integer):
    raise ValueError(f'{what} must be integers, got {values.dtype}')
  if values.size and values.min() < 0:
    raise ValueError(f'{what} must be non-negative, got a minimum of {values.min()}')
  fits16 = not values.size or values.max() <= np.iinfo(np.int16).max
  return values.astype(np.int16 if fits16 else np.int32)


def _save_atomic(path: pathlib.Path, array: np.ndarray) -> pathlib.Path:
  tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
  with open(tmp, 'wb') as f:
    np.save(f, array)
    f.flush()
    os.fsync(f.fileno())
  return tmp


def write_shard(directory: str | os.PathLike, index: int, codes: np.ndarray,
                labels: np.ndarray) -> pathlib.Path:
  """Writes shard `index`: codes int [n, L] (L = 273 for AliTok), labels int [n].

  Returns the path of the codes file. Overwrites an existing shard of the same index atomically.
  """
  codes, labels = np.asarray(codes), np.asarray(labels)
  if codes.ndim != 2:
    raise ValueError(f'codes must be [n, tokens], got shape {codes.shape}')
  if labels.shape != (codes.shape[0],):
    raise ValueError(f'labels must be [n] with n = {codes.shape[0]} (one per row of codes), '
                     f'got shape {labels.shape}')
  if index < 0:
    raise ValueError(f'shard index must be non-negative, got {index}')
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  codes_path, labels_path = directory / _CODES.format(index), directory / _LABELS.format(index)
  tmp_codes = _save_atomic(codes_path, _compact(codes, 'codes'))
  tmp_labels = _save_atomic(labels_path, _compact(labels, 'labels'))
  if labels_path.exists():  # an older shard of this index is incomplete from here on
    labels_path.unlink()
  os.replace(tmp_codes, codes_path)
  os.replace(tmp_labels, labels_path)
  return codes_path


def list_shards(directory: str | os.PathLike) -> list[int]:
  """Indices of the complete shards in `directory`, sorted ([] if it does not exist)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  out = []
  for entry in os.scandir(directory):
    m = _LABELS_RE.match(entry.name)
    if m and shard_exists(directory, int(m.group(1))):
      out.append(int(m.group(1)))
  return sorted(out)


def shard_exists(directory: str | os.PathLike, index: int) -> bool:
  """True when shard `index` is complete in `directory` (both files, labels renamed last)."""
  directory = pathlib.Path(directory)
  return ((directory / _LABELS.format(index)).is_file()
          and (directory / _CODES.format(index)).is_file())


class CodeShards:
  """A grain RandomAccessDataSource over every complete shard of a directory.

  `source[i]` = {'codes': int32 [L], 'label': int32}, shards in index order. Code files are
  memory-mapped (opened lazily, again in each worker process); labels are read into memory.
  """

  def __init__(self, directory: str | os.PathLike):
    self.directory = pathlib.Path(directory)
    self.shards = list_shards(self.directory)
    if not self.shards:
      raise FileNotFoundError(f'no code shards in {self.directory} (expected codes-NNNNNN.npy + '
                              'labels-NNNNNN.npy pairs written by write_shard; run the '
                              'pretokenization first)')
    self._labels = [self._read(k, _LABELS, mmap=False) for k in self.shards]
    sizes, tokens = [], set()
    for k, labels in zip(self.shards, self._labels):
      codes = self._read(k, _CODES, mmap=True)
      if codes.ndim != 2 or labels.ndim != 1 or codes.shape[0] != len(labels):
        raise ValueError(f'shard {k} in {self.directory} is inconsistent: codes {codes.shape}, '
                         f'labels {labels.shape}; {self._remake(k)}')
      sizes.append(len(labels))
      tokens.add(codes.shape[1])
    if len(tokens) != 1:
      raise ValueError(f'shards in {self.directory} disagree on tokens per example: {tokens}')
    self.num_tokens = tokens.pop()
    self._ends = np.cumsum(sizes).tolist()
    self._codes = None

  def _remake(self, k: int) -> str:
    return (f'delete {_CODES.format(k)} and {_LABELS.format(k)} there and re-run the '
            'pretokenization with the same settings (it writes only the missing shards)')

  def _read(self, k: int, pattern: str, mmap: bool) -> np.ndarray:
    return npy_files.open_npy(self.directory / pattern.format(k), mmap=mmap,
                              hint=self._remake(k))

  def __len__(self) -> int:
    return self._ends[-1]

  def __getstate__(self) -> dict:
    return {**self.__dict__, '_codes': None}

  def _open(self) -> list[np.ndarray]:
    if self._codes is None:
      self._codes = [self._read(k, _CODES, mmap=True) for k in self.shards]
    return self._codes

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f'index {index} out of range for {len(self)} coded examples')
    shard = bisect.bisect_right(self._ends, index)
    offset = index - (self._ends[shard - 1] if shard else 0)
    return {'codes': np.asarray(self._open()[shard][offset], np.int32),
            'label': np.int32(self._labels[shard][offset])}

  def __repr__(self) -> str:
    return (f'CodeShards({str(self.directory)!r}: {len(self)} examples of {self.num_tokens} codes '
            f'in {len(self.shards)} shards)')


def code_loader(directory: str | os.PathLike | CodeShards, *, batch_size: int, seed: int,
                train: bool, shard_index: int | None = None, shard_count: int | None = None,
                num_epochs: int | None = None, worker_count: int = 0,
                read_threads: int = 4) -> loader.Loader:
  """Batches {'codes': int32 [b, L], 'label': int32 [b]} of this process's shard.

  Same contract as `image_pipeline.image_loader`: train=True shuffles (a new order each epoch) and
  repeats `num_epochs` times (None: forever), full batches only; train=False is one ordered pass
  with the last partial batch kept. Iterate the result for a checkpointable grain iterator.
  """
  source = directory if isinstance(directory, CodeShards) else CodeShards(directory)
  return loader.build_loader(len(source), loader.Records(source), batch_size=batch_size,
                             seed=seed, train=train, shard_index=shard_index,
                             shard_count=shard_count, num_epochs=num_epochs,
                             worker_count=worker_count, read_threads=read_threads)
