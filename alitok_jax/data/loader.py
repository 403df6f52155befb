"""The generic grain loader: per-process, checkpointable batch iterators over any random-access
source, in one global stream that does not depend on the process count.

    loader = build_loader(len(source), Records(source), batch_size=64, seed=0, train=True,
                          shard_index=None, shard_count=None, num_epochs=None, worker_count=0)
    it = iter(loader)                 # a grain DatasetIterator: get_state() / set_state()
    batch = next(it)                  # the element_fn's dicts, stacked along a new first axis
    loader.stats()['skipped']         # examples skipped as unreadable so far

Order of work (one grain MapDataset, so any element is a pure function of its position):
training: one global stream, a seeded shuffle of all source indices (a new order each epoch),
cut into batches of the per-process size; process p of P takes batches p, p + P, p + 2P, ..., so
global batch t (the P local batches of step t, in process order, as
`jax.make_array_from_process_local_data` assembles them) does not depend on P; evaluation: the
indices `shard_index::shard_count` in order. Then `element_fn(epoch, index, position)` -> drop the
elements it returns as None -> threads -> batch -> optional worker processes. The image examples
(decode + transforms) are `image_pipeline.py`'s element_fn; pretokenized codes and synthetic
codes use `Records`.

Checkpoints: the iterator state is a small JSON-able dict (`it.get_state()`), restored with
`it.set_state(state)` into a fresh `iter(loader)` built with the same arguments; grain's Orbax
handler (`grain.checkpoint.CheckpointSave` / `CheckpointRestore`) saves it per process.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import uuid
import weakref
from typing import Any, Callable, Iterator

import grain
import numpy as np


class SkipCounter:
  """Counts examples skipped as unreadable, across reading threads and grain worker processes.

  Each skip appends one line (the example's name and the error) to a small file, created at the
  first skip (default: a unique name in the temp folder, removed with this object); worker
  processes hold pickled copies of this object that append to the same file, so `count` seen from
  the training process includes their skips. Counts are made when an example is read, which with
  prefetching can be a little ahead of the batches consumed; after a restore from a checkpoint
  the counting starts again from zero.
  """

  def __init__(self, path: str | os.PathLike | None = None, warn_first: int = 5):
    if path is None:
      path = os.path.join(tempfile.gettempdir(), f'alitok_skipped_{uuid.uuid4().hex}.txt')
      weakref.finalize(self, _remove_quietly, path)
    self.path = os.fspath(path)
    self.warn_first = warn_first
    self._warned = 0

  def __getstate__(self) -> dict:
    return {'path': self.path, 'warn_first': self.warn_first, '_warned': 0}

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)

  def add(self, name: str, error: BaseException) -> None:
    message = f'{name}\t{type(error).__name__}: {error}'.replace('\n', ' ')
    with open(self.path, 'a', encoding='utf-8') as f:
      f.write(message + '\n')
    if self._warned < self.warn_first:
      self._warned += 1
      print(f'skipping unreadable image {message}', file=sys.stderr)

  def _lines(self) -> list[str]:
    try:
      with open(self.path, encoding='utf-8') as f:
        return f.read().splitlines()
    except FileNotFoundError:
      return []

  @property
  def count(self) -> int:
    return len(self._lines())

  def names(self, limit: int = 20) -> list[str]:
    """Names of the first `limit` skipped examples (in the order they were met)."""
    return [line.split('\t', 1)[0] for line in self._lines()[:limit]]


def _remove_quietly(path: str) -> None:
  try:
    os.remove(path)
  except OSError:
    pass


@dataclasses.dataclass(frozen=True)
class Loader:
  """A built pipeline: iterate it for a checkpointable grain iterator of batches.

  Attributes:
    dataset: the grain IterDataset of batches.
    num_examples: indices in this process's shard per epoch, before skipping unreadable ones
      (training: the source size over the shard count, rounded down).
    batch_size: examples per batch (the last batch of a finite pass may be smaller).
    skip_counter: examples skipped as unreadable (see `stats`).
  """
  dataset: grain.IterDataset
  num_examples: int
  batch_size: int
  skip_counter: SkipCounter
  max_num_examples: int = 0  # the largest process shard (shards differ by at most one)

  def __iter__(self) -> grain.DatasetIterator:
    return iter(self.dataset)

  @property
  def num_batches(self) -> int:
    """Batches in one pass over this shard when nothing is skipped (last partial included)."""
    return math.ceil(self.num_examples / self.batch_size)

  def padded_pass(self) -> Iterator[dict]:
    """One evaluation pass with the same number of full batches on every process.

    For multi-process evaluation (num_epochs None or 1), where every process must feed the same
    global batches (`jax.make_array_from_process_local_data`): yields exactly
    ceil(max_num_examples / batch_size) batches of batch_size rows; rows with mask False
    (padding, and whole padding batches once this shard runs out, e.g. after skipped images)
    are to be ignored. Needs a loader built with pad_last=True.
    """
    count = math.ceil(self.max_num_examples / self.batch_size)
    template, done = None, 0
    for batch in self:
      if 'mask' not in batch:
        raise ValueError('padded_pass needs a loader built with train=False, pad_last=True')
      if done == count:  # worker processes each end their slice with a partial batch
        raise RuntimeError(f'this pass has more than {count} batches: use worker_count=0 with '
                           'padded_pass')
      template, done = batch, done + 1
      yield batch
    if template is None:
      raise RuntimeError('this process shard produced no batch at all (every image unreadable?)')
    for _ in range(count - done):
      yield {k: np.full_like(v, -1) if k in ('label', 'index') else np.zeros_like(v)
             for k, v in template.items()}

  def stats(self) -> dict[str, Any]:
    """{'skipped': examples skipped so far, 'skipped_names': the first of them}."""
    return {'skipped': self.skip_counter.count, 'skipped_names': self.skip_counter.names()}


def resolve_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  """(shard_index, shard_count), defaulting to (jax.process_index(), jax.process_count())."""
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if shard_count < 1 or not 0 <= shard_index < shard_count:
    raise ValueError(f'need 0 <= shard_index < shard_count, got shard_index={shard_index}, '
                     f'shard_count={shard_count}')
  return int(shard_index), int(shard_count)


def _check_common(batch_size: int, seed: int, num_epochs: int | None, worker_count: int) -> None:
  if batch_size < 1:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  if not 0 <= seed < 2**32:
    raise ValueError(f'seed must be in [0, 2**32), got {seed}')
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f'num_epochs must be None (forever) or positive, got {num_epochs}')
  if worker_count < 0:
    raise ValueError(f'worker_count must be >= 0, got {worker_count}')


def _is_present(element: Any) -> bool:
  return element is not None


class _PadBatch:
  """Pads a short last batch to `batch_size` (zeros, label -1); 'mask' marks the real rows."""

  def __init__(self, batch_size: int):
    self.batch_size = batch_size

  def __call__(self, batch: dict) -> dict:
    n = len(batch['mask'])
    if n == self.batch_size:
      return batch
    pad = self.batch_size - n
    out = {}
    for key, value in batch.items():
      fill = -1 if key in ('label', 'index') else 0
      out[key] = np.concatenate([value, np.full((pad,) + value.shape[1:], fill, value.dtype)])
    return out


def build_loader(num_examples: int, element_fn: Callable[[int, int, int], dict | None], *,
                 batch_size: int, seed: int, train: bool, shard_index: int | None,
                 shard_count: int | None, num_epochs: int | None, worker_count: int,
                 pad_last: bool = False, read_threads: int = 8,
                 prefetch_buffer: int | None = None,
                 skip_counter: SkipCounter | None = None, start_batch: int = 0) -> Loader:
  """The shared skeleton of every loader here.

  `element_fn(epoch, index, position)` makes the example at source index `index` (or returns
  None to drop it); it must be picklable when worker_count > 0. `position` is the example's
  place in the stream (train: in the global stream; evaluation: in this shard's).

  train=True: one global stream (a seeded shuffle of all indices, a new order each epoch)
  cut into batches of `batch_size`; shard k of n takes batches k, k + n, k + 2n, ..., so the
  n consecutive local batches of step t, in shard order, are the same global batch whatever n
  is (as long as batch_size * n is the same). `start_batch` skips this shard's first batches
  (resuming at step t without a saved iterator: start_batch=t).
  train=False: shard k reads the source indices k, k + n, ... in order (evaluation passes).
  """
  _check_common(batch_size, seed, num_epochs, worker_count)
  shard_index, shard_count = resolve_shard(shard_index, shard_count)
  if num_examples < shard_count:
    raise ValueError(f'{num_examples} examples cannot be split into {shard_count} process shards')
  if pad_last and train:
    raise ValueError('pad_last is for evaluation passes (train=False)')
  if start_batch < 0 or (start_batch and not train):
    raise ValueError(f'start_batch={start_batch}: must be >= 0, and only for train=True')
  if train:
    stride = batch_size * shard_count  # examples per global batch
    total = num_examples * num_epochs if num_epochs else sys.maxsize // 2
    local_examples = total // stride * batch_size  # whole global batches only
    if local_examples == 0:
      raise ValueError(f'{num_examples} examples x {num_epochs} epoch(s) do not fill one global '
                       f'batch of {stride} ({shard_count} shards x {batch_size})')
    shard_size = num_examples // shard_count  # this shard's examples per epoch, about
    ds = grain.MapDataset.range(min(start_batch * batch_size, local_examples), local_examples)
    ds = ds.map(_GlobalStream(element_fn, num_examples, seed, batch_size, shard_index,
                              shard_count))
  else:
    ds = grain.MapDataset.range(num_examples)[shard_index::shard_count]
    shard_size = len(ds)
    if num_epochs not in (None, 1):
      ds = ds.repeat(num_epochs)
    ds = ds.map_with_index(_WithEpoch(element_fn, shard_size))
  ds = ds.filter(_is_present)
  if pad_last:
    ds = ds.map(_add_mask)
  read = grain.ReadOptions(num_threads=read_threads,
                           prefetch_buffer_size=prefetch_buffer or max(2 * batch_size, 16))
  it_ds = ds.to_iter_dataset(read).batch(batch_size, drop_remainder=train)
  if pad_last:
    it_ds = it_ds.map(_PadBatch(batch_size))
  options = getattr(grain.experimental, 'DatasetOptions', None)
  with_options = getattr(grain.experimental, 'WithOptionsIterDataset', None)
  if options is not None and with_options is not None:  # never raise on many skipped examples
    it_ds = with_options(it_ds, options(filter_raise_threshold_ratio=None))
  if worker_count > 0:
    _absl_flags_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return Loader(it_ds, shard_size, batch_size, skip_counter or SkipCounter(),
                max_num_examples=math.ceil(num_examples / shard_count))


def _absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside an absl app (tests, notebooks) nothing
  has parsed them, so mark them parsed with their defaults."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _add_mask(element: dict) -> dict:
  return {**element, 'mask': np.bool_(True)}


class _GlobalStream:
  """This shard's stream position j -> the global stream's element -> element_fn(...).

  Global position q = (j // b) * n * b + k * b + j % b (batch j // b of shard k is global batch
  (j // b) * n + k); its source index is grain's seeded shuffle of range(N) at q, which
  reshuffles every epoch (q // N).
  """

  def __init__(self, element_fn: Callable, num_examples: int, seed: int, batch_size: int,
               shard_index: int, shard_count: int):
    self.element_fn, self.num_examples = element_fn, num_examples
    self.order = grain.MapDataset.range(num_examples).shuffle(seed=seed)
    self.batch_size, self.shard_index, self.shard_count = batch_size, shard_index, shard_count

  def __call__(self, j: int):
    b = self.batch_size
    q = (j // b) * self.shard_count * b + self.shard_index * b + j % b
    return self.element_fn(q // self.num_examples, int(self.order[q]), q)


class _WithEpoch:
  """(position in the repeated shard pass, source index) -> element_fn(epoch, index, position)."""

  def __init__(self, element_fn: Callable, shard_size: int):
    self.element_fn, self.shard_size = element_fn, shard_size

  def __call__(self, position: int, index: int):
    return self.element_fn(position // self.shard_size, int(index), position)


class Records:
  """element_fn over a source of ready-made records (code shards, synthetic codes): its item at
  the source index, whatever the epoch or position."""

  def __init__(self, source):
    self.source = source

  def __call__(self, epoch: int, index: int, position: int) -> dict:
    del epoch, position
    return self.source[index]
