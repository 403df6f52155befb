"""The `rfid` mode: rFID, PSNR, SSIM and LPIPS of a tokenizer's reconstructions.

    python -m alitok_jax.main --config=configs/rfid.py --workdir=out/rfid \
        --config.tokenizer=weights/tokenizer --config.images=imagenet/val \
        --config.inception=weights/inception --config.lpips=weights/lpips

Every image is centre-cropped to the tokenizer's size (256, ADM-style), encoded, decoded, and the
reconstruction rounded to uint8 as a saved image would be. Then, per image and on the device:
Inception features of original and reconstruction, squared error (PSNR), SSIM (11x11 Gaussian)
and LPIPS (VGG16 v0.1, when config.lpips is set). rFID is the Frechet distance between the
features of the originals and of their reconstructions (the 50,000 ImageNet val images for the
reported figure: ALITOK_REFERENCE.md section 4, rFID 0.86, PSNR 20.97, SSIM 0.661, LPIPS 0.157).
One jitted step does all of it, sharded over a 'data' mesh; progress is printed and the results
written to `workdir/results.json`.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from alitok_jax import Tokenizer
from alitok_jax.eval import fid as fid_lib
from alitok_jax.eval import image_metrics, image_source
from alitok_jax.eval import reference_batch as rb
from alitok_jax.eval.features import inception_features, load_inception, random_inception
from alitok_jax.eval.progress import Progress, note, warn
from alitok_jax.eval.reconstruct import test_pattern_images
from alitok_jax.losses import lpips as lpips_loss
from alitok_jax.models import build, variants
from alitok_jax.parallel.mesh import DATA, data_mesh, local_rows, pad_rows, round_up

IMAGENET_VAL = 50_000


def _tokenizer(config: ml_collections.ConfigDict) -> Tokenizer:
  if config.tokenizer:
    return Tokenizer.load(config.tokenizer, dtype=config.dtype)
  if config.random_tokenizer:
    if config.random_tokenizer not in variants.TOKENIZER:
      raise ValueError(f'config.random_tokenizer must be one of {sorted(variants.TOKENIZER)}')
    warn(f'config.random_tokenizer: a RANDOM {config.random_tokenizer} tokenizer (smoke test)')
    return Tokenizer.random(variants.TOKENIZER[config.random_tokenizer], seed=config.seed,
                            dtype=config.dtype)
  raise ValueError('config.tokenizer is not set: it must name a tokenizer model directory (from '
                   '`python -m alitok_jax.convert AliTok.pth weights/tokenizer`)')


def _inception(config: ml_collections.ConfigDict):
  if config.inception:
    return load_inception(config.inception)
  if config.random_inception:
    warn('config.random_inception: a RANDOM-WEIGHT Inception; rFID is meaningless (smoke test)')
    return random_inception(config.seed)
  from alitok_jax.eval.features import HOW_TO  # noqa: PLC0415

  raise ValueError(f'config.inception is not set: it must name the FID Inception model '
                   f'directory; {HOW_TO}')


def _lpips(config: ml_collections.ConfigDict):
  if config.lpips:
    return lpips_loss.load_params(config.lpips)
  if config.random_lpips:
    warn('config.random_lpips: a RANDOM-WEIGHT LPIPS (smoke test)')
    return lpips_loss.random_params(config.seed)
  note('config.lpips is empty: LPIPS skipped')
  return None


def _source(config: ml_collections.ConfigDict, size: int) -> image_source.ImageSource:
  if config.images:
    return image_source.FolderSource(config.images, size, config.workers)
  if config.tfds:
    return image_source.TFDSSource(config.tfds, size, config.tfds_data_dir)
  if config.tiny_images:
    return image_source.ArraySource(test_pattern_images(config.tiny_images, size, config.seed),
                                    'generated test patterns')
  raise ValueError('set config.images (a folder, e.g. the 50,000 ImageNet val JPEGs) or '
                   "config.tfds (e.g. 'imagenet2012:validation')")


def _make_step(tok: Tokenizer, inc_graphdef, with_lpips: bool):
  tok_graphdef = tok.graphdef

  def step(tok_params, inc_params, lpips_params, images):
    with jax.default_matmul_precision('float32'):
      x = images.astype(jnp.float32) / 255.0
      recon, _, q = nnx.merge(tok_graphdef, dict(tok_params))(x)
      recon = jnp.clip(jnp.round(recon * 255.0), 0, 255).astype(jnp.uint8)  # as saved
      r = recon.astype(jnp.float32) / 255.0
      feats = inception_features(inc_graphdef, inc_params, jnp.concatenate([images, recon]))
      out = {'pool': feats.pool, 'spatial': feats.spatial, 'codes': q.codes,
             'mse': jnp.mean((x - r) ** 2, axis=(1, 2, 3)), 'ssim': image_metrics.ssim(x, r)}
      if with_lpips:
        out['lpips'] = lpips_loss.lpips_distance(lpips_params, x, r)
    return out

  return step


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  lpips_params = _lpips(config)  # the weights first: a missing file fails before any work
  inc_config, inc_params = _inception(config)
  tok = _tokenizer(config)
  size = tok.config.image_size
  source = _source(config, size)
  n = min(config.num_images or len(source), len(source))
  if n != IMAGENET_VAL:
    warn(f'evaluating {n} images; the reported rFID uses the {IMAGENET_VAL} ImageNet val images '
         '(FID is biased upwards for fewer)')

  mesh = data_mesh()
  batch = round_up(max(config.batch_size, 1), mesh.size)
  per_process = batch // jax.process_count()
  repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA))
  step = jax.jit(_make_step(tok, build.abstract(inc_config)[0], lpips_params is not None),
                 in_shardings=(repl, repl, repl, data), out_shardings=repl)
  params = jax.device_put((dict(tok.params), dict(inc_params), lpips_params), repl)
  note(f'reconstructing {n} images ({source.name}) at {size}x{size}, batches of {batch} on '
       f'{mesh.size} device(s)')

  progress = Progress('reconstructions', n)
  outs: dict[str, list[np.ndarray]] = {}
  usage = np.zeros(tok.config.codebook_size, np.int64)
  for b0 in range(0, n, batch):
    a, b = local_rows(b0, batch, n)
    local = source.read(a, b) if b > a else np.zeros((0, size, size, 3), np.uint8)
    x = jax.make_array_from_process_local_data(data, pad_rows(local, per_process),
                                               (batch, size, size, 3))
    result = jax.tree.map(np.asarray, step(*params, x))
    keep = min(batch, n - b0)
    pool, spatial = result.pop('pool'), result.pop('spatial')  # [2 * batch, ...]: originals, recon
    result.update(pool_orig=pool[:keep], pool_recon=pool[batch:batch + keep],
                  spatial_orig=spatial[:keep], spatial_recon=spatial[batch:batch + keep])
    for name, value in result.items():
      outs.setdefault(name, []).append(value[:keep])
    usage += np.bincount(result['codes'][:keep].ravel(), minlength=len(usage))
    progress.update(keep)
  o = {k: np.concatenate(v) for k, v in outs.items()}

  stats_orig = dict(zip(('mu', 'sigma'), fid_lib.statistics(o['pool_orig'])))
  results = {
      'rfid': fid_lib.frechet_distance_to(o['pool_recon'], stats_orig['mu'], stats_orig['sigma'],
                                          method=config.fid_method),
      'psnr': float(np.mean(image_metrics.psnr_from_mse(o['mse']))),
      'ssim': float(np.mean(o['ssim'])),
      'num_images': n,
      'codebook_usage': float(np.mean(usage > 0)),
      'images': source.name,
      'tokenizer': config.tokenizer or f'random {config.random_tokenizer}',
      'inception': config.inception or f'random (seed {config.seed})',
  }
  if 'lpips' in o:
    results['lpips'] = float(np.mean(o['lpips']))
  results['seconds'] = round(time.perf_counter() - start, 1)
  if config.write_reference and jax.process_index() == 0:
    mu_s, sigma_s = fid_lib.statistics(o['spatial_orig'])
    rb.write_reference_batch(config.write_reference, mu_s=mu_s, sigma_s=sigma_s,
                             pool_features=o['pool_orig'], **stats_orig)
    note(f'wrote the originals\' statistics to {config.write_reference}')
  if jax.process_index() == 0:
    (workdir / 'results.json').write_text(json.dumps(results, indent=1) + '\n')
  shown = ', '.join(f'{k} {results[k]:.4f}' for k in ('rfid', 'psnr', 'ssim', 'lpips')
                    if k in results)
  note(f'{shown} ({n} images, {results["seconds"]} s); wrote {workdir / "results.json"}')
  return results
