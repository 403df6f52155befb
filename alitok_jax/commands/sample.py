"""The `sample` mode: class-balanced images for FID, written as PNGs and an ADM-evaluator `.npz`.

    python -m alitok_jax.main --config=configs/sample.py:XL --workdir=workdirs/sample_xl \
        --config.generator=weights/ar_xl --config.tokenizer=weights/tokenizer

Image i has class i % 1000 (50 per class for 50k images), as the reference's `sample_imagenet.py`;
the layout under the workdir (shards, settings.json, PNGs, samples.npz, preview.png) and the
resumable, pipelined loop are `sample/shards.py`. With several processes, process p takes shards
p, p + P, ... on its own devices (the workdir must be shared), and process 0 assembles the outputs
once every process is done.
"""

from __future__ import annotations

import pathlib

import jax
import ml_collections

from alitok_jax import Generator, Tokenizer, checkpoint
from alitok_jax.commands import loading
from alitok_jax.errors import ConfigError
from alitok_jax.models import variants
from alitok_jax.sample import decode
from alitok_jax.sample import shards as shards_lib
from alitok_jax.sample.strategies import Sampling
from alitok_jax.train import memory

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
    loading.check_sizes(gen.config, config, config.generator)
  else:
    gen_cfg = variants.sized_from_config(variants.AR['tiny'], config)
    print(f'no config.generator: using a random tiny AR model ({gen_cfg.image_seq_len} codes)')
    gen = Generator.random(gen_cfg, seed=config.seed, dtype=config.dtype)
  tok = loading.tokenizer(config.tokenizer, random='tiny_stage2', dtype=config.dtype,
                          seed=config.seed, sizes=config)
  released = variants.AR.get(config.variant)
  if released is not None and (gen.config.width, gen.config.depth) != (released.width,
                                                                         released.depth):
    print(f'note: the generator (width {gen.config.width}, depth {gen.config.depth}) is not '
          f'the released {config.variant} size; the guidance defaults are those of '
          f'{config.variant}')
  if gen.config.image_seq_len != tok.config.num_latent_tokens or (
      gen.config.codebook_size != tok.config.codebook_size):
    raise ConfigError('the generator and tokenizer do not fit together: '
                      f'{gen.config.image_seq_len} vs {tok.config.num_latent_tokens} codes, '
                      f'codebook {gen.config.codebook_size} vs {tok.config.codebook_size}')
  return gen, tok


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  workdir = pathlib.Path(workdir)
  if config.num_images < 1 or config.batch_size < 1:
    raise ConfigError('config.num_images and config.batch_size must be >= 1')
  gen, tok = _load(config)
  # The config's short form (0 / 1.0: no top-k / top-p), then more filters by name.
  sampling = Sampling.from_settings(config.temperature, config.top_k, config.top_p,
                                      config.filters)
  guidance, sampling = gen.strategies(config.guidance_scale, config.guidance_pow,
                                      sampling=sampling)
  if not 0 <= config.seed < 2**32:
    raise ConfigError(f'config.seed must lie in [0, 2**32), got {config.seed}')
  shards = shards_lib.Shards(config.num_images, config.batch_size, gen.config.num_classes)
  if shards.num_images % shards.num_classes:
    print(f'note: {shards.num_images} images are not a multiple of {shards.num_classes} '
          'classes, so the classes are not exactly balanced')
  settings = {k: config[k] for k in _SETTING_KEYS}
  if config.filters:  # (only when set: shards made before this setting existed stay valid)
    settings['filters'] = str(Sampling.parse(config.filters))
  for k in ('generator', 'tokenizer'):  # the same directory however it is spelled
    settings[k] = str(pathlib.Path(settings[k]).expanduser().resolve()) if settings[k] else ''
  shards_lib.check_settings(workdir / shards_lib.SHARDS_DIR, settings)

  devices = jax.local_devices()
  print(memory.sampling_estimate(gen.config, tok.config, config.batch_size, len(devices),
                                 dtype_bytes=gen.dtype.itemsize, guided=guidance.enabled))
  sampler = gen.sampler(devices=devices, segments=config.segments, attention=config.attention)
  decoder = decode.Decoder(tok, devices=devices)
  if config.batch_size % len(devices):
    print(f'note: batch_size {config.batch_size} does not divide over {len(devices)} local '
          'devices; batches are padded (wasted work)')
  pid, nproc = jax.process_index(), jax.process_count()
  mine = list(range(pid, shards.count, nproc))
  todo = [k for k in mine if not shards.path(workdir / shards_lib.SHARDS_DIR, k).is_file()]
  print(f'{config.num_images} images ({shards.count} shards of {config.batch_size}) with '
        f'guidance {config.guidance_scale} / power {config.guidance_pow}, sampling {sampling}, '
        f'seed {config.seed}, {config.dtype}, on {len(devices)} {devices[0].platform} devices'
        + (f' (process {pid} of {nproc})' if nproc > 1 else ''))
  if len(todo) < len(mine):
    print(f'resuming: {len(mine) - len(todo)} finished shards skipped, {len(todo)} to do')
  shards_lib.write_shards(sampler, decoder, shards, todo, workdir, guidance=guidance,
                          sampling=sampling, seed=config.seed, batch_size=config.batch_size,
                          write_pngs=config.write_pngs)
  if nproc > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415

    multihost_utils.sync_global_devices('alitok_jax sample: all shards written')
  if pid == 0:
    shards_lib.assemble(workdir, shards, config.preview_images)
