"""The sample command's images on disk: shards of one batch each, resumable, then the ADM npz.

Follows the reference's `sample_imagenet.py`: image i has class i % 1000 (50 per class for 50k
images), PNGs are named by image index, and the final `.npz` holds `arr_0` uint8 [N, 256, 256, 3]
(and, as the ADM sampling scripts write it, the labels as `arr_1`). Under the workdir:
  samples/shard_00000.npz ...  one file per batch (images, codes, labels), written atomically;
                               a rerun skips the shards that exist (resume)
  samples/settings.json        what the shards were made with; a rerun with other settings stops
  images/000000.png ...        every image (write_pngs)
  samples.npz                  arr_0 images, arr_1 labels: the OpenAI ADM evaluator's input
  preview.png                  a grid of the first images
`write_shards` samples (a `sampler.Sampler`) and decodes (`decode.Decoder`) one shard while the
host writes the previous one; with several processes each takes shards p, p + P, ... and process
0 assembles (`assemble`) once all are done. A shard that cannot be read back (damaged on disk,
wrong arrays or shapes) stops `assemble` with ShardError naming it: delete it and rerun. The
command is `commands/sample.py`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import time
import zipfile
import zlib
from typing import Any

import jax
import numpy as np

from alitok_jax import errors, progress, viz
from alitok_jax.parallel.mesh import pad_rows
from alitok_jax.sample import npz

SHARDS_DIR = 'samples'
SETTINGS_FILE = 'settings.json'


class ShardError(errors.UserError, ValueError):
  """A sample shard on disk that cannot be read back as written."""


@dataclasses.dataclass(frozen=True)
class Shards:
  """Image i (of num_images) has class i % num_classes; shard k holds images of batch k."""

  num_images: int
  batch_size: int
  num_classes: int

  @property
  def count(self) -> int:
    return -(-self.num_images // self.batch_size)

  def indices(self, k: int) -> np.ndarray:
    return np.arange(k * self.batch_size, min(self.num_images, (k + 1) * self.batch_size))

  def labels(self, k: int) -> np.ndarray:
    return (self.indices(k) % self.num_classes).astype(np.int32)

  def path(self, root: pathlib.Path, k: int) -> pathlib.Path:
    return root / f'shard_{k:05d}.npz'


def check_settings(root: pathlib.Path, settings: dict) -> None:
  """Records the settings; refuses to mix shards made with different ones."""
  path = root / SETTINGS_FILE
  if path.is_file():
    old = json.loads(path.read_text())
    changed = {k: (old.get(k), settings[k]) for k in settings if old.get(k) != settings[k]}
    if changed:
      listing = ', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changed.items())
      raise ValueError(f'{root} holds shards made with other settings ({listing}); use a new '
                       '--workdir, or delete that folder to start over')
    return
  root.mkdir(parents=True, exist_ok=True)
  tmp = root / f'{SETTINGS_FILE}.{jax.process_index()}.tmp'
  tmp.write_text(json.dumps(settings, indent=1) + '\n')
  os.replace(tmp, path)


def _save_shard(path: pathlib.Path, **arrays) -> None:
  tmp = path.with_name(path.name + '.tmp.npz')
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def read_shard(shards: Shards, root: pathlib.Path, k: int,
               keys: tuple[str, ...] = ('images', 'labels')) -> dict[str, np.ndarray]:
  """{'images': uint8 [n, H, W, 3], 'labels': int [n]} of shard k (those in `keys`), checked.

  Raises ShardError (one line naming the file, and to delete it and rerun) when the file is not a
  readable npz or its arrays are missing or of the wrong shape.
  """
  path, n = shards.path(root, k), len(shards.indices(k))
  fix = 'delete it and rerun the same command to make it again'
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {key: f[key] for key in keys}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
    raise ShardError(f'{path} is unreadable ({type(e).__name__}: {e}); {fix}') from None
  images, labels = arrays.get('images'), arrays.get('labels')
  if images is not None and (images.dtype != np.uint8 or images.ndim != 4
                             or images.shape[0] != n or images.shape[-1] != 3):
    raise ShardError(f'{path}: images are {images.dtype} {list(images.shape)}, expected uint8 '
                     f'[{n}, H, W, 3]; {fix}')
  if labels is not None and (labels.shape != (n,) or labels.dtype.kind not in 'iu'):
    raise ShardError(f'{path}: labels are {labels.dtype} {list(labels.shape)}, expected '
                     f'integers [{n}]; {fix}')
  return arrays


def assemble(workdir: pathlib.Path, shards: Shards, preview: int) -> None:
  """samples.npz (arr_0 images, arr_1 labels) and preview.png from the finished shards."""
  root = workdir / SHARDS_DIR
  missing = [k for k in range(shards.count) if not shards.path(root, k).is_file()]
  if missing:
    raise RuntimeError(f'{len(missing)} shards are missing (first: {missing[:5]}); rerun the '
                       'same command to finish them')
  out = workdir / 'samples.npz'
  first = read_shard(shards, root, 0, ('images',))['images']
  shape = (shards.num_images, *first.shape[1:])
  if npz.array_shape(out, 'arr_0') == shape and out.stat().st_mtime >= max(
      shards.path(root, k).stat().st_mtime for k in range(shards.count)):
    print(f'{out} is up to date')
  else:
    def chunks(name):
      for k in range(shards.count):
        yield read_shard(shards, root, k, (name,))[name]

    print(f'writing {out} ({np.prod(shape) / 2**30:.1f} GiB)', flush=True)
    with npz.NpzWriter(out) as w:
      w.write_array('arr_0', shape, np.uint8, chunks('images'))
      w.write_array('arr_1', (shards.num_images,), np.int64,
                    (c.astype(np.int64) for c in chunks('labels')))
  images = []
  for k in range(shards.count):
    if sum(len(i) for i in images) >= preview:
      break
    images.append(read_shard(shards, root, k, ('images',))['images'])
  images = np.concatenate(images)[:preview]
  cols = min(8, len(images))
  viz.save_png(workdir / 'preview.png',
               viz.grid([images[i:i + cols] for i in range(0, len(images), cols)]))
  print(f'done: {out} (arr_0 uint8 {list(shape)}, arr_1 labels) and {workdir / "preview.png"}')


def write_shards(sampler: Any, decoder: Any, shards: Shards, todo: list[int],
                 workdir: pathlib.Path, *, guidance: Any, sampling: Any, seed: int,
                 batch_size: int, write_pngs: bool) -> None:
  """Samples, decodes and writes the shards `todo`, printing images/s and an ETA.

  The device works on shard k + 1 while the host writes shard k (PNGs through a thread pool).
  A short last shard is padded to `batch_size`, so nothing compiles twice.
  """
  root = workdir / SHARDS_DIR
  pngs = workdir / 'images'
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1))
  total = sum(len(shards.indices(k)) for k in todo)
  start, done, first = time.perf_counter(), 0, None  # first: (time, images) after shard 1

  def launch(k):  # device work, dispatched asynchronously
    labels = shards.labels(k)
    n = len(labels)  # a short last shard is padded to the batch size: no second compilation
    labels = pad_rows(labels, batch_size)
    codes = sampler.sample(labels, guidance, sampling, seed=seed,
                           first_index=int(shards.indices(k)[0]))
    images = decoder(codes)
    return (k, codes, images) if n == batch_size else (k, codes[:n], images[:n])

  def finish(job):  # host work for one shard, overlapping the device's next shard
    nonlocal done, first
    k, codes, images = job
    images, codes = np.asarray(images), np.asarray(codes)
    indices = shards.indices(k)
    if write_pngs:
      pngs.mkdir(parents=True, exist_ok=True)
      list(pool.map(lambda a: viz.save_png(pngs / f'{a[0]:06d}.png', a[1]), zip(indices, images)))
    _save_shard(shards.path(root, k), images=images, codes=codes, labels=shards.labels(k),
                indices=indices)
    done += len(indices)
    now = time.perf_counter()
    if first is None:  # the first shard's time includes compiling
      first = (now, done)
      rate, note = done / (now - start), ' (with compilation)'
    else:
      rate, note = (done - first[1]) / (now - first[0]), ''
    print(f'  shard {k + 1}/{shards.count}: {done}/{total} images this run, {rate:.1f} '
          f'images/s{note}, ETA {progress.duration((total - done) / rate)}', flush=True)

  in_flight = None
  for k in todo:
    job = launch(k)
    if in_flight is not None:
      finish(in_flight)
    in_flight = job
  if in_flight is not None:
    finish(in_flight)
  pool.shutdown()
