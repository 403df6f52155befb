"""Images as batches: read, decode and transform one example, then grain's loader.

    loader = image_loader(sources.make_source('folder', root='imagenet/train'), batch_size=48,
                          seed=0, train=True, image_size=256)
    it = iter(loader)                 # a grain DatasetIterator: get_state() / set_state()
    batch = next(it)                  # {'image': uint8 [b, S, S, 3], 'label': int32 [b]}
    loader.stats()['skipped']         # unreadable images skipped so far

Each element is read from the source, decoded (`image_io`), transformed with a numpy Generator
seeded by (seed, epoch, source index) and dropped when unreadable (counted, never raised); the
batching, sharding over processes, threads, workers and checkpoints are `loader.build_loader`'s.
Training follows the reference tokenizer recipe (resize shorter side, random crop, random flip;
ALITOK_REFERENCE.md section 2); evaluation uses the ADM centre crop; pretokenization the ten-crop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alitok_jax.data import image_io, transforms
from alitok_jax.data.loader import Loader, SkipCounter, build_loader


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
