"""Pretokenization: an image source -> ten-crop tokenizer codes in shards, for AR training.

The library side of the `pretokenize` mode (`commands/pretokenize.py`). ALITOK_REFERENCE.md
section 3 (`pretokenization.py`): each image is centre-cropped the ADM way to 1.1 x 256 = 281
pixels, then cut into the ten crops of torchvision's TenCrop (four corners and the centre, and
the same of the flipped image); every crop's 273 codes are one training example.

Source images are split into shards of `images_per_shard`; shard k holds the codes of images
[k * n, (k + 1) * n) as `data.code_shards` writes them (atomically), so a rerun skips finished
shards and a crash loses at most the shards in progress. Processes take shards round-robin and
encode on their own devices (no cross-process traffic); the batch is split over local devices.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import numpy as np

from alitok_jax.data import code_shards, image_pipeline
from alitok_jax.models import functional
from alitok_jax.parallel import mesh as mesh_lib

CROPS = 10


class _Range:
  """Source indices [lo, hi) of another source (one shard's images)."""

  def __init__(self, source, lo: int, hi: int):
    self.source, self.lo, self.hi = source, lo, hi

  def __len__(self) -> int:
    return self.hi - self.lo

  def __getitem__(self, index: int):
    return self.source[self.lo + int(index)]


def encode_to_shards(tok, source, out: str | pathlib.Path, *, num_images: int,
                     images_per_shard: int, batch_size: int, tokenizer_name: str) -> dict:
  """Encodes the first `num_images` of `source` (<= 0: all) into code shards under `out`.

  tok: a tokenizer with `config`, `graphdef` and `params` (the API's Tokenizer). Shards that
  exist are skipped; processes take shards round-robin. Returns the summary that is also written
  to `out/pretokenize.json` (`tokenizer_name` is recorded there).
  """
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  size = tok.config.image_size
  n = len(source) if num_images <= 0 else min(num_images, len(source))
  per_shard = images_per_shard
  num_shards = -(-n // per_shard)
  mine = [k for k in range(num_shards) if k % jax.process_count() == jax.process_index()]
  todo = [k for k in mine if not code_shards.shard_exists(out, k)]
  local = jax.local_devices()
  mesh = mesh_lib.make_mesh(mesh_lib.MeshSpec(), devices=local)
  rows = batch_size * CROPS
  if rows % len(local):
    raise ValueError(f'batch_size x 10 crops = {rows} rows do not split over {len(local)} '
                     'local devices')
  sharding = mesh_lib.batch_sharding(mesh)
  graphdef, params = tok.graphdef, jax.device_put(tok.params, mesh_lib.replicated(mesh))
  print(f'pretokenizing {n} images x {CROPS} crops into {num_shards} shards of {per_shard} images '
        f'under {out}; this process: {len(todo)} to do, {len(mine) - len(todo)} already done',
        flush=True)
  start, done_images, skipped = time.perf_counter(), 0, 0
  for count, k in enumerate(todo):
    lo, hi = k * per_shard, min((k + 1) * per_shard, n)
    loader = image_pipeline.image_loader(_Range(source, lo, hi), batch_size=batch_size,
                                         seed=0, train=False, image_size=size, ten_crop=True,
                                         shard_index=0, shard_count=1, pad_last=True)
    codes, labels = [], []
    for batch in loader:  # image uint8 [b, 10, S, S, 3], label [b], mask [b]
      crops = np.asarray(batch['image']).reshape(rows, size, size, 3)
      batch_codes = np.asarray(functional.encode(graphdef, params,
                                                 jax.device_put(crops, sharding))[1])
      real = np.repeat(np.asarray(batch['mask']), CROPS)
      codes.append(batch_codes[real])
      labels.append(np.repeat(np.asarray(batch['label']), CROPS)[real])
    skipped += loader.stats()['skipped']
    code_shards.write_shard(out, k, np.concatenate(codes), np.concatenate(labels))
    done_images += hi - lo
    rate = done_images / (time.perf_counter() - start)
    left = sum(min((j + 1) * per_shard, n) - j * per_shard for j in todo[count + 1:])
    print(f'  shard {k + 1}/{num_shards}: {done_images} images, {rate:.1f} images/s '
          f'({rate * CROPS:.0f} crops/s), ~{left / max(rate, 1e-9):.0f}s left', flush=True)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices('pretokenize done')
  summary = {'images': n, 'crops_per_image': CROPS, 'shards': num_shards,
             'skipped_this_process': skipped, 'tokenizer': tokenizer_name,
             'image_size': size, 'codes_per_image': tok.config.num_latent_tokens,
             'codebook_size': tok.config.codebook_size}
  if jax.process_index() == 0:
    (out / 'pretokenize.json').write_text(json.dumps(summary, indent=1) + '\n')
  print(f'done: {summary}')
  return summary
