"""The `rfid` mode: rFID, PSNR, SSIM and LPIPS of a tokenizer's reconstructions.

    python -m alitok_jax.main --config=configs/rfid.py --workdir=out/rfid \
        --config.tokenizer=weights/tokenizer --config.images=imagenet/val \
        --config.inception=weights/inception --config.lpips=weights/lpips

Images come from a folder, a TFDS split or built-in test patterns, centre-cropped to the
tokenizer's size (256, ADM-style); the work is `eval/reconstruction.py`'s, the Inception's input
preprocessed as `config.preprocess` says ('adm', the ADM evaluator's, by default). Progress is
printed and the results written to `workdir/results.json`.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import ml_collections

from alitok_jax.commands import loading
from alitok_jax.data import synthetic
from alitok_jax.errors import ConfigError
from alitok_jax.eval import features
from alitok_jax.eval import fid as fid_lib
from alitok_jax.eval import image_source
from alitok_jax.eval import reference_batch as rb
from alitok_jax.progress import note, warn
from alitok_jax.eval.reconstruction import ReconstructionEvaluator, reconstruction_metrics

IMAGENET_VAL = 50_000


def _source(config: ml_collections.ConfigDict, size: int) -> image_source.ImageSource:
  if config.images:
    return image_source.FolderSource(config.images, size, config.workers)
  if config.tfds:
    return image_source.TFDSSource(config.tfds, size, config.tfds_data_dir)
  if config.tiny_images:
    return image_source.ArraySource(synthetic.pattern_images(config.tiny_images, size,
                                                             config.seed),
                                    'generated test patterns')
  raise ConfigError('set config.images (a folder, e.g. the 50,000 ImageNet val JPEGs) or '
                    "config.tfds (e.g. 'imagenet2012:validation')")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  preprocess = features.check_preprocess(config.preprocess)
  # The weights first: a missing file fails before any work.
  lpips_params = loading.lpips(config.lpips, random=config.random_lpips, seed=config.seed)
  inc_config, inc_params = loading.inception(config.inception, random=config.random_inception,
                                             seed=config.seed)
  tok = loading.tokenizer(config.tokenizer, random=config.random_tokenizer, dtype=config.dtype,
                          seed=config.seed)
  size = tok.config.image_size
  source = _source(config, size)
  n = min(config.num_images or len(source), len(source))
  if n != IMAGENET_VAL:
    warn(f'evaluating {n} images; the reported rFID uses the {IMAGENET_VAL} ImageNet val images '
         '(FID is biased upwards for fewer)')
  evaluator = ReconstructionEvaluator(tok, inc_config, inc_params, lpips_params,
                                      batch_size=config.batch_size, preprocess=preprocess)
  note(f'reconstructing {n} images ({source.name}) at {size}x{size}, batches of '
       f'{evaluator.batch_size} on {evaluator.mesh.size} device(s)')
  outputs, usage = evaluator.run(source, n)
  results = reconstruction_metrics(outputs, usage, fid_method=config.fid_method)
  results.update(images=source.name,
                 tokenizer=config.tokenizer or f'random {config.random_tokenizer}',
                 inception=config.inception or f'random (seed {config.seed})',
                 preprocess=preprocess)
  results['seconds'] = round(time.perf_counter() - start, 1)
  if config.write_reference and jax.process_index() == 0:
    mu, sigma = fid_lib.statistics(outputs['pool_orig'])
    mu_s, sigma_s = fid_lib.statistics(outputs['spatial_orig'])
    rb.write_reference_batch(config.write_reference, mu=mu, sigma=sigma, mu_s=mu_s,
                             sigma_s=sigma_s, pool_features=outputs['pool_orig'],
                             preprocess=preprocess)
    note(f'wrote the originals\' statistics to {config.write_reference}')
  if jax.process_index() == 0:
    (workdir / 'results.json').write_text(json.dumps(results, indent=1) + '\n')
  shown = ', '.join(f'{k} {results[k]:.4f}' for k in ('rfid', 'psnr', 'ssim', 'lpips')
                    if k in results)
  note(f'{shown} ({n} images, {results["seconds"]} s); wrote {workdir / "results.json"}')
  return results
