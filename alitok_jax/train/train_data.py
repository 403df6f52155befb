"""The trainers' view of `alitok_jax.data`: a config's data section -> this process's batches.

A data section names a kind of `data.sources` and its arguments (`data.kind=folder`,
`data.root=...`); `image_source` / `code_source` map it onto the registry. Each process reads its
own batches of one global shuffled stream (process p of P takes batches p, p + P, ...;
`data.loader.build_loader`) and feeds `local_batch` rows;
`parallel.mesh.global_batch` assembles the global array, so global batch t is the same for any
number of processes with the same global batch size. Iterators are grain's, so
`train.checkpoints` saves and restores their position with the train state; `restart_at(t)`
positions a fresh stream at step t when no saved position fits (another process count).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import numpy as np

from alitok_jax.data import image_pipeline, loader, sources
from alitok_jax.errors import ConfigError
from alitok_jax.models import functional
from alitok_jax.parallel import mesh as mesh_lib


def image_source(data: Any, *, image_size: int, seed: int, held_out: bool = False):
  """A grain data source from a config's data section (synthetic / folder / tfds)."""
  kind = data.kind
  if kind == 'synthetic':
    return sources.make_source('synthetic', num_classes=data.num_classes, size=data.size,
                               image_size=image_size, seed=seed + 1 if held_out else seed)
  if kind == 'folder':
    if not data.root:
      raise ConfigError('data.kind=folder needs data.root (a folder with one subfolder per class)')
    return sources.make_source('folder', root=data.root)
  if kind == 'tfds':
    return sources.make_source('tfds', name='imagenet2012', split=data.split,
                               data_dir=data.get('data_dir') or None)
  raise ConfigError(f'data.kind={kind!r} is not one of {", ".join(sources.IMAGE_KINDS)}')


class ImageBatches:
  """Endless shuffled, augmented batches {'image': uint8 [b, S, S, 3], 'label': int32 [b]}."""

  def __init__(self, data: Any, *, local_batch: int, image_size: int, seed: int):
    self._source = image_source(data, image_size=image_size, seed=seed)
    self._kwargs = dict(batch_size=local_batch, seed=seed, train=True, image_size=image_size,
                        shard_index=jax.process_index(), shard_count=jax.process_count(),
                        worker_count=data.get('worker_count', 0))
    self.restart_at(0)

  def restart_at(self, step: int) -> None:
    """A fresh stream whose next batch is this process's batch of global step `step`."""
    self.loader = image_pipeline.image_loader(self._source, start_batch=step, **self._kwargs)
    self.iterator = iter(self.loader)  # what checkpoints save

  def next(self) -> dict[str, np.ndarray]:
    return next(self.iterator)

  def skipped(self) -> int:
    return int(self.loader.stats()['skipped'])


def held_out_images(config: Any, count: int, image_size: int) -> np.ndarray:
  """The first `count` held-out images (ADM centre crop), the same on every process.

  Held out means: `config.eval_data` when it names a kind; else synthetic images of another
  seed, or the TFDS validation split; a folder dataset without `eval_data` falls back to its
  own first images (said in the log).
  """
  data = config.data
  eval_data = config.get('eval_data')
  if eval_data is not None and eval_data.kind:
    data = eval_data
  elif data.kind == 'tfds':
    data = data.copy_and_resolve_references()
    with data.unlocked():
      data.split = 'validation'
  elif data.kind == 'folder':
    print('note: no config.eval_data given; evaluating on the first training images')
  source = image_source(data, image_size=image_size, seed=config.seed, held_out=True)
  batches = image_pipeline.image_loader(source, batch_size=min(count, 32), seed=0, train=False,
                                        image_size=image_size, shard_index=0, shard_count=1)
  images, have = [], 0
  for batch in batches:
    images.append(np.asarray(batch['image']))
    have += len(images[-1])
    if have >= count:
      break
  if not images:
    raise ConfigError(f'no held-out images could be read from {source!r}')
  return np.concatenate(images)[:count]


def code_source(data: Any, ar_cfg, seed: int, held_out: bool = False):
  """A grain source of code sequences from a config's data section (codes / synthetic_codes)."""
  if data.kind == 'synthetic_codes':
    return sources.make_source('synthetic_codes', num_classes=data.num_classes, size=data.size,
                               seq_len=ar_cfg.image_seq_len, codebook_size=ar_cfg.codebook_size,
                               seed=seed + 1 if held_out else seed)
  if data.kind == 'codes':
    if not data.codes_dir:
      raise ConfigError('data.kind=codes needs data.codes_dir: shards written by '
                        '`python -m alitok_jax.main --config=configs/pretokenize.py`')
    return check_code_shards(sources.make_source('codes', directory=data.codes_dir), ar_cfg,
                             data.codes_dir)
  raise ConfigError(f'data.kind={data.kind!r} is not one of codes, images, synthetic_codes')


def check_code_shards(source: Any, ar_cfg, where: str) -> Any:
  """ConfigError unless the shards hold the AR model's codes per example and, where the
  pretokenization recorded it (pretokenize.json), its codebook size; the source otherwise."""
  if source.num_tokens != ar_cfg.image_seq_len:
    raise ConfigError(f'{where} holds {source.num_tokens} codes per example, but the AR model '
                      f'takes {ar_cfg.image_seq_len}: pretokenize with a tokenizer of its size '
                      f'(e.g. res=512 for 1,057 codes) or train at the size of these codes')
  summary = pathlib.Path(where) / 'pretokenize.json'
  if summary.is_file():
    codebook = json.loads(summary.read_text()).get('codebook_size')
    if codebook is not None and codebook != ar_cfg.codebook_size:
      raise ConfigError(f'{where} holds codes of a {codebook}-entry codebook, but the AR model '
                        f'has {ar_cfg.codebook_size} (codebook={codebook} in the config '
                        'argument)')
  return source


class CodeBatches:
  """Global batches {'codes': int32 [B, L], 'label': int32 [B]} for the AR trainer (L: the AR
  model's codes, 273 at 256 pixels).

  From code shards, from synthetic codes, or from images encoded on the fly by `tokenizer`
  (`data.kind=images`, for data small enough that pretokenizing is not worth it): an object
  with the `config`, `graphdef` and `params` of a tokenizer (the API's `Tokenizer`).
  """

  def __init__(self, config: Any, local_batch: int, mesh, ar_cfg, tokenizer=None):
    data, self.mesh, self._tokenizer = config.data, mesh, None
    if data.kind == 'images':
      if tokenizer is None:
        raise ConfigError('data.kind=images encodes images on the fly: set config.tokenizer')
      tok = tokenizer
      image_data = data.copy_and_resolve_references()
      with image_data.unlocked():
        image_data.kind = data.image_kind
      self._images = ImageBatches(image_data, local_batch=local_batch,
                                  image_size=tok.config.image_size, seed=config.seed)
      self._tokenizer = (tok.graphdef, jax.device_put(tok.params, mesh_lib.replicated(mesh)))
      self.iterator = self._images.iterator
    else:
      self._source = code_source(data, ar_cfg, config.seed)
      self._kwargs = dict(batch_size=local_batch, seed=config.seed, train=True,
                          shard_index=jax.process_index(), shard_count=jax.process_count(),
                          num_epochs=None, worker_count=data.get('worker_count', 0))
      self.restart_at(0)

  def restart_at(self, step: int) -> None:
    """A fresh stream whose next batch is this process's batch of global step `step`."""
    if self._tokenizer is not None:
      self._images.restart_at(step)
      self.iterator = self._images.iterator
    else:
      stream = loader.build_loader(len(self._source), loader.Records(self._source),
                                   start_batch=step, **self._kwargs)
      self.iterator = iter(stream)  # what checkpoints save

  def next(self) -> dict[str, jax.Array]:
    local = next(self.iterator)
    if self._tokenizer is None:
      return mesh_lib.global_batch({'codes': local['codes'], 'label': local['label']}, self.mesh)
    batch = mesh_lib.global_batch({'image': local['image'], 'label': local['label']}, self.mesh)
    return {'codes': functional.encode(*self._tokenizer, batch['image'])[1],
            'label': batch['label']}


def held_out_codes(config: Any, count: int, ar_cfg) -> dict[str, np.ndarray]:
  """Up to `count` held-out sequences {'codes', 'label'} (empty arrays when there are none)."""
  data = config.data
  if config.get('eval_codes_dir'):
    source = check_code_shards(sources.make_source('codes', directory=config.eval_codes_dir),
                               ar_cfg, config.eval_codes_dir)
  elif data.kind == 'synthetic_codes':
    source = code_source(data, ar_cfg, config.seed, held_out=True)
  else:
    return {'codes': np.zeros((0, ar_cfg.image_seq_len), np.int32),
            'label': np.zeros((0,), np.int32)}
  n = min(count, len(source))
  rows = [source[i] for i in range(n)]
  return {'codes': np.stack([np.asarray(r['codes'], np.int32) for r in rows]),
          'label': np.asarray([r['label'] for r in rows], np.int32)}
