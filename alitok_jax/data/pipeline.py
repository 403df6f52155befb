"""grain input pipelines: per-process shards of image sources -> decoded, augmented batches.

    loader = image_loader(make_source('folder', root='imagenet/train'), batch_size=48, seed=0,
                          train=True, image_size=256)
    it = iter(loader)                 # a grain DatasetIterator: get_state() / set_state()
    batch = next(it)                  # {'image': uint8 [b, S, S, 3], 'label': int32 [b]}
    loader.stats()['skipped']         # unreadable images skipped so far

Order of work (one grain MapDataset, so any element is a pure function of its position):
training: one global stream, a seeded shuffle of all source indices (a new order each epoch),
cut into batches of the per-process size; process p of P takes batches p, p + P, p + 2P, ..., so
global batch t (the P local batches of step t, in process order, as
`jax.make_array_from_process_local_data` assembles them) does not depend on P; evaluation: the
indices `shard_index::shard_count` in order. Then read + decode + transform with a numpy
Generator seeded by (seed, epoch, source index) -> drop unreadable -> threads -> batch ->
optional worker processes. Training follows the reference tokenizer recipe (resize shorter side,
random crop, random flip; ALITOK_REFERENCE.md section 2); evaluation uses the ADM centre crop;
pretokenization the ten-crop.

Checkpoints: the iterator state is a small JSON-able dict (`it.get_state()`), restored with
`it.set_state(state)` into a fresh `iter(loader)` built with the same arguments; grain's Orbax
handler (`grain.checkpoint.CheckpointSave` / `CheckpointRestore`) saves it per process.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import sys
import tempfile
import uuid
import weakref
from typing import Any, Callable, Iterator

import grain
import numpy as np

from alitok_jax.data import image_io, transforms

SOURCE_KINDS = ('synthetic', 'folder', 'tfds')


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


def loader_stats(loader: Loader) -> dict[str, Any]:
  return loader.stats()


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


class _ImageExample:
  """Reads, decodes and transforms one image; unreadable ones are counted and dropped (None)."""

  def __init__(self, source, *, seed: int, train: bool, image_size: int, ten_crop: bool,
               skip_counter: SkipCounter, with_index: bool):
    self.source, self.seed, self.train = source, seed, train
    self.image_size, self.ten_crop = image_size, ten_crop
    self.skip_counter, self.with_index = skip_counter, with_index

  def __call__(self, epoch: int, index: int, position: int) -> dict | None:
    del position
    record = None
    try:
      record = self.source[index]
      image = record['image']
      if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
              and image.shape[-1] == 3):
        image = image_io.decode_image(image)
      label = np.int32(record['label'])
    except Exception as e:  # pylint: disable=broad-except  # a bad file must never stop a run
      self.skip_counter.add(_record_name(self.source, index, record), e)
      return None
    if self.train:
      rng = np.random.default_rng([self.seed, epoch, index])
      image = transforms.train_transform(image, self.image_size, rng)
    elif self.ten_crop:
      image = transforms.ten_crop(image, self.image_size)
    else:
      image = transforms.eval_transform(image, self.image_size)
    out = {'image': image, 'label': label}
    if self.with_index:
      out['index'] = np.int32(index)
    return out


def _record_name(source, index: int, record: Any) -> str:
  """A name for log lines: the record's 'name', the source's `name_of(index)`, or the index."""
  if isinstance(record, dict) and 'name' in record:
    return str(record['name'])
  name_of = getattr(source, 'name_of', None)
  return str(name_of(index)) if name_of is not None else f'{type(source).__name__}[{index}]'


def image_loader(source, *, batch_size: int, seed: int, train: bool, image_size: int,
                 shard_index: int | None = None, shard_count: int | None = None,
                 num_epochs: int | None = None, worker_count: int = 0, ten_crop: bool = False,
                 pad_last: bool = False, read_threads: int = 8,
                 prefetch_buffer: int | None = None, start_batch: int = 0) -> Loader:
  """Batches of images and labels of this process's shard of `source`.

  Args:
    source: a RandomAccessDataSource of {'image': encoded bytes | uint8 [H, W, 3] | PIL image,
      'label': int, optionally 'name'} (`make_source`).
    batch_size: examples per batch in this process.
    seed: shuffling and augmentation seed; augmentation of source index i in epoch e uses
      `np.random.default_rng([seed, e, i])`, so an example never depends on threads, workers
      or where a run was resumed.
    train: True: shuffled (a new order each epoch), repeated `num_epochs` times (None: forever),
      resize shorter side + random crop + random flip, full batches only; batches are
      {'image': uint8 [b, S, S, 3], 'label': int32 [b]}.
      False: one ordered pass (`num_epochs` passes if given), ADM centre crop (or ten-crop), the
      last partial batch kept; batches add 'index' int32 [b] (source index of every row). The
      real count of a batch is its length; with pad_last=True every batch has exactly
      batch_size rows and 'mask' bool [b] marks the real ones (padding: zeros, label -1), and
      `loader.padded_pass()` gives every process the same number of batches.
    image_size: S.
    shard_index, shard_count: this process's shard (default jax.process_index() / count()).
      train=True: shard k takes batches k, k + count, ... of one global shuffled stream, so the
      examples of a global batch (all shards' batches of one step) are disjoint, an epoch covers
      the source, and the global batches are the same for any count with the same
      batch_size * count (unless images are skipped as unreadable, which shifts a shard's
      batches; so do worker processes, see below). train=False: shard k reads source indices
      k, k + count, k + 2 count, ... in order (disjoint, covering).
    num_epochs: see `train`.
    worker_count: 0 decodes in threads of this process; > 0 starts grain worker processes
      (batches then come round-robin from the workers, each holding a slice of the shard, so the
      batch order depends on worker_count; restore a state with the same worker_count).
    ten_crop: train=False only: images are the pretokenization ten-crop, uint8 [b, 10, S, S, 3].
    pad_last: see `train`.
    read_threads, prefetch_buffer: grain ReadOptions (threads decoding, elements read ahead).
    start_batch: train=True only: start at this shard's batch `start_batch` (resume at a step
      when no saved iterator state fits, e.g. after a change of process count).

  Unreadable or corrupt images are skipped, never raised: `loader.stats()['skipped']` counts
  them (worker processes included).
  """
  if ten_crop and train:
    raise ValueError('ten_crop is the pretokenization transform: use it with train=False')
  if image_size < 1:
    raise ValueError(f'image_size must be positive, got {image_size}')
  counter = SkipCounter()
  element_fn = _ImageExample(source, seed=seed, train=train, image_size=image_size,
                             ten_crop=ten_crop, skip_counter=counter, with_index=not train)
  return build_loader(len(source), element_fn, batch_size=batch_size, seed=seed, train=train,
                      shard_index=shard_index, shard_count=shard_count, num_epochs=num_epochs,
                      worker_count=worker_count, pad_last=pad_last, read_threads=read_threads,
                      prefetch_buffer=prefetch_buffer, skip_counter=counter,
                      start_batch=start_batch)


def make_source(kind: str, **kwargs):
  """A source from config-like arguments.

    make_source('synthetic', num_classes=10, size=10000, image_size=64, seed=0)
    make_source('folder', root='/data/imagenet/train')
    make_source('tfds', name='imagenet2012', split='train', data_dir='/data/tfds')
  """
  # pylint: disable=import-outside-toplevel
  from alitok_jax.data import folders, synthetic, tfds_source
  factories = {'synthetic': synthetic.SyntheticImages, 'folder': folders.ImageFolder,
               'tfds': tfds_source.tfds_source}
  if kind not in factories:
    raise ValueError(f'unknown data source kind {kind!r}; choose one of {SOURCE_KINDS}')
  factory = factories[kind]
  params = inspect.signature(factory).parameters
  unknown = sorted(set(kwargs) - set(params))
  missing = sorted(name for name, p in params.items()
                   if p.default is inspect.Parameter.empty and name not in kwargs
                   and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
  if unknown or missing:
    accepted = ', '.join(
        n + ('' if p.default is inspect.Parameter.empty else f'={p.default!r}')
        for n, p in params.items())
    problems = ([f'unknown arguments {unknown}'] if unknown else []) + (
        [f'missing arguments {missing}'] if missing else [])
    raise ValueError(f'data source {kind!r}: {"; ".join(problems)}; it takes ({accepted})')
  return factory(**kwargs)
