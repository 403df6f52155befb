"""The `sample` mode: class-balanced images for FID, written as PNGs and an ADM-evaluator `.npz`.

    python -m alitok_jax.main --config=configs/sample.py:XL --workdir=workdirs/sample_xl \
        --config.generator=weights/ar_xl --config.tokenizer=weights/tokenizer

Follows the reference's `sample_imagenet.py`: image i has class i % 1000 (50 per class for 50k
images), PNGs are named by image index, and the final `.npz` holds `arr_0` uint8 [N, 256, 256, 3]
(and, as the ADM sampling scripts write it, the labels as `arr_1`). Writes into the workdir:
  samples/shard_00000.npz ...  one file per batch (images, codes, labels), written atomically;
                               a rerun skips the shards that exist (resume)
  samples/settings.json        what the shards were made with; a rerun with other settings stops
  images/000000.png ...        every image (config.write_pngs)
  samples.npz                  arr_0 images, arr_1 labels: the OpenAI ADM evaluator's input
  preview.png                  a grid of the first images
With several processes, process p takes shards p, p + P, ... on its own devices (the workdir must
be shared), and process 0 assembles the outputs once every process is done.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import time

import jax
import ml_collections
import numpy as np

from alitok_jax import Generator, Tokenizer, checkpoint, viz
from alitok_jax.models import variants
from alitok_jax.sample import decode, npz
from alitok_jax.sample.cfg import Guidance
from alitok_jax.sample.strategies import Sampling

SHARDS_DIR = 'samples'
SETTINGS_FILE = 'settings.json'
# Settings that change the images; a rerun must agree on them to reuse finished shards.
_SETTING_KEYS = ('variant', 'generator', 'tokenizer', 'num_images', 'batch_size',
                 'guidance_scale', 'guidance_pow', 'temperature', 'top_k', 'top_p', 'seed',
                 'dtype')


def _load(config: ml_collections.ConfigDict) -> tuple[Generator, Tokenizer]:
  """The generator and tokenizer of the config (random tiny models for :tiny without dirs)."""
  missing = [name for name in ('generator', 'tokenizer') if not config[name]]
  if missing and config.variant != 'tiny':
    example = {'generator': f'weights/alitok_{config.variant.lower()}.bin weights/ar_'
                            f'{config.variant.lower()}',
               'tokenizer': 'weights/AliTok.pth weights/tokenizer'}
    raise checkpoint.CheckpointError(
        f'config.{missing[0]} is empty: sampling needs converted model directories. Convert the '
        f'released weights first, e.g. `python -m alitok_jax.convert {example[missing[0]]}`, '
        f'then pass --config.{missing[0]}=<that directory>')
  if config.generator:
    gen = Generator.load(config.generator, dtype=config.dtype)
  else:
    print('no config.generator: using a random tiny AR model')
    gen = Generator.random(variants.AR['tiny'], seed=config.seed, dtype=config.dtype)
  if config.tokenizer:
    tok = Tokenizer.load(config.tokenizer, dtype=config.dtype)
  else:
    print('no config.tokenizer: using a random tiny tokenizer')
    tok = Tokenizer.random(variants.TOKENIZER['tiny_stage2'], seed=config.seed,
                           dtype=config.dtype)
  released = variants.AR.get(config.variant)
  if released is not None and (gen.config.width, gen.config.depth) != (released.width,
                                                                         released.depth):
    print(f'note: the generator (width {gen.config.width}, depth {gen.config.depth}) is not '
          f'the released {config.variant} size; the guidance defaults are those of '
          f'{config.variant}')
  if gen.config.image_seq_len != tok.config.num_latent_tokens or (
      gen.config.codebook_size != tok.config.codebook_size):
    raise ValueError('the generator and tokenizer do not fit together: '
                     f'{gen.config.image_seq_len} vs {tok.config.num_latent_tokens} codes, '
                     f'codebook {gen.config.codebook_size} vs {tok.config.codebook_size}')
  return gen, tok


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


def _check_settings(root: pathlib.Path, settings: dict) -> None:
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


def _eta(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m' if seconds >= 3600 else (
      f'{seconds // 60}m{seconds % 60:02d}s')


def _assemble(workdir: pathlib.Path, root: pathlib.Path, shards: Shards, preview: int) -> None:
  """samples.npz (arr_0 images, arr_1 labels) and preview.png from the finished shards."""
  missing = [k for k in range(shards.count) if not shards.path(root, k).is_file()]
  if missing:
    raise RuntimeError(f'{len(missing)} shards are missing (first: {missing[:5]}); rerun the '
                       'same command to finish them')
  out = workdir / 'samples.npz'
  first = np.load(shards.path(root, 0))['images']
  shape = (shards.num_images, *first.shape[1:])
  if npz.array_shape(out, 'arr_0') == shape and out.stat().st_mtime >= max(
      shards.path(root, k).stat().st_mtime for k in range(shards.count)):
    print(f'{out} is up to date')
  else:
    def chunks(name):
      for k in range(shards.count):
        with np.load(shards.path(root, k)) as f:
          yield f[name]

    print(f'writing {out} ({np.prod(shape) / 2**30:.1f} GiB)', flush=True)
    with npz.NpzWriter(out) as w:
      w.write_array('arr_0', shape, np.uint8, chunks('images'))
      w.write_array('arr_1', (shards.num_images,), np.int64,
                    (c.astype(np.int64) for c in chunks('labels')))
  images = []
  for k in range(shards.count):
    if sum(len(i) for i in images) >= preview:
      break
    images.append(np.load(shards.path(root, k))['images'])
  images = np.concatenate(images)[:preview]
  cols = min(8, len(images))
  viz.save_png(workdir / 'preview.png',
               viz.grid([images[i:i + cols] for i in range(0, len(images), cols)]))
  print(f'done: {out} (arr_0 uint8 {list(shape)}, arr_1 labels) and {workdir / "preview.png"}')


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  workdir = pathlib.Path(workdir)
  root = workdir / SHARDS_DIR
  if config.num_images < 1 or config.batch_size < 1:
    raise ValueError('config.num_images and config.batch_size must be >= 1')
  gen, tok = _load(config)
  guidance = Guidance.create(config.guidance_scale, config.guidance_pow, gen.config.image_seq_len)
  sampling = Sampling.create(config.temperature, config.top_k or None,
                             config.top_p if config.top_p < 1.0 else None)
  if not 0 <= config.seed < 2**32:
    raise ValueError(f'config.seed must lie in [0, 2**32), got {config.seed}')
  shards = Shards(config.num_images, config.batch_size, gen.config.num_classes)
  if shards.num_images % shards.num_classes:
    print(f'note: {shards.num_images} images are not a multiple of {shards.num_classes} '
          'classes, so the classes are not exactly balanced')
  settings = {k: config[k] for k in _SETTING_KEYS}
  for k in ('generator', 'tokenizer'):  # the same directory however it is spelled
    settings[k] = str(pathlib.Path(settings[k]).expanduser().resolve()) if settings[k] else ''
  _check_settings(root, settings)

  devices = jax.local_devices()
  sampler = gen.sampler(devices=devices, segments=config.segments, attention=config.attention)
  decoder = decode.Decoder(tok, devices=devices)
  if config.batch_size % len(devices):
    print(f'note: batch_size {config.batch_size} does not divide over {len(devices)} local '
          'devices; batches are padded (wasted work)')
  pid, nproc = jax.process_index(), jax.process_count()
  mine = list(range(pid, shards.count, nproc))
  todo = [k for k in mine if not shards.path(root, k).is_file()]
  print(f'{config.num_images} images ({shards.count} shards of {config.batch_size}) with '
        f'guidance {config.guidance_scale} / power {config.guidance_pow}, temperature '
        f'{config.temperature}, seed {config.seed}, {config.dtype}, on {len(devices)} '
        f'{devices[0].platform} devices' + (f' (process {pid} of {nproc})' if nproc > 1 else ''))
  if len(todo) < len(mine):
    print(f'resuming: {len(mine) - len(todo)} finished shards skipped, {len(todo)} to do')

  pngs = workdir / 'images'
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1))
  total = sum(len(shards.indices(k)) for k in todo)
  start, done, first = time.perf_counter(), 0, None  # first: (time, images) after shard 1

  def launch(k):  # device work, dispatched asynchronously
    labels = shards.labels(k)
    n = len(labels)  # a short last shard is padded to the batch size: no second compilation
    labels = np.concatenate([labels, np.zeros(config.batch_size - n, np.int32)])
    codes = sampler.sample(labels, guidance, sampling, seed=config.seed,
                           first_index=int(shards.indices(k)[0]))
    images = decoder(codes)
    return (k, codes, images) if n == config.batch_size else (k, codes[:n], images[:n])

  def finish(job):  # host work for one shard, overlapping the device's next shard
    nonlocal done, first
    k, codes, images = job
    images, codes = np.asarray(images), np.asarray(codes)
    indices = shards.indices(k)
    if config.write_pngs:
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
          f'images/s{note}, ETA {_eta((total - done) / rate)}', flush=True)

  in_flight = None
  for k in todo:
    job = launch(k)
    if in_flight is not None:
      finish(in_flight)
    in_flight = job
  if in_flight is not None:
    finish(in_flight)
  pool.shutdown()

  if nproc > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415

    multihost_utils.sync_global_devices('alitok_jax sample: all shards written')
  if pid == 0:
    _assemble(workdir, root, shards, config.preview_images)
