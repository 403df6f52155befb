"""The `fid` mode: gFID, sFID, Inception Score, precision and recall of a sample batch.

    python -m alitok_jax.main --config=configs/fid.py --workdir=out/fid \
        --config.samples=samples_xl.npz --config.reference=VIRTUAL_imagenet256_labeled.npz \
        --config.inception=weights/inception

What the ADM evaluator (openai/guided-diffusion `evaluations/evaluator.py`) reports, computed with
this package's Inception (docs/EVALUATION.md says how the two differ):
- FID / sFID against the reference's stored `mu`/`sigma` (`mu_s`/`sigma_s`), or against
  statistics of its images when it stores none;
- IS over splits of 5000 samples; precision / recall (k = 3) against the reference's images
  (10,000 in ADM's ImageNet batch) or its stored pool features.
Prints progress and the results, writes `workdir/results.json`; `config.write_stats` also saves
the samples' statistics as an ADM-format npz (a new reference set).
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import ml_collections
import numpy as np

from alitok_jax.eval import fid as fid_lib
from alitok_jax.eval import reference_batch as rb
from alitok_jax.eval.features import FeatureExtractor, load_inception, random_inception
from alitok_jax.eval.inception_score import inception_score
from alitok_jax.eval.precision_recall import ADM_K, precision_recall
from alitok_jax.eval.progress import note, warn
from alitok_jax.eval.reconstruct import test_pattern_images

STANDARD_SAMPLES = 50_000


def load_extractor(config: ml_collections.ConfigDict) -> FeatureExtractor:
  """The Inception of config.inception, or a random one when config.random_inception is set."""
  if config.inception:
    inc_config, params = load_inception(config.inception)
  elif config.random_inception:
    warn('config.random_inception: a RANDOM-WEIGHT Inception; every number below is '
         'meaningless (smoke test only)')
    inc_config, params = random_inception(config.seed)
  else:
    from alitok_jax.eval.features import HOW_TO  # noqa: PLC0415

    raise ValueError(f'config.inception is not set: it must name the FID Inception model '
                     f'directory; {HOW_TO}')
  return FeatureExtractor(inc_config, params, batch_size=config.batch_size)


def _tiny_batches(workdir: pathlib.Path, n: int, seed: int) -> tuple[str, str]:
  """Writes two small sets of test-pattern images (a smoke test's 'samples' and 'reference')."""
  samples, reference = workdir / 'tiny_samples.npz', workdir / 'tiny_reference.npz'
  np.savez(samples, arr_0=test_pattern_images(n, 64, seed))
  np.savez(reference, arr_0=test_pattern_images(n, 64, seed + 1))
  note(f'wrote {n} generated test-pattern images each to {samples} and {reference}')
  return str(samples), str(reference)


def _statistics(feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  mu, sigma = fid_lib.statistics(feats['pool'])
  mu_s, sigma_s = fid_lib.statistics(feats['spatial'])
  return {'mu': mu, 'sigma': sigma, 'mu_s': mu_s, 'sigma_s': sigma_s}


def _reference(ref: rb.ReferenceBatch, extractor: FeatureExtractor,
               want_pr: bool) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
  """(statistics, pool features for precision/recall or None) of the reference batch."""
  pool = None if ref.pool_features is None else np.asarray(ref.pool_features)
  feats = None
  if ref.num_images and (not ref.has_statistics or (want_pr and pool is None)):
    feats = extractor.extract_array(ref.images(), 'reference images')
    pool = feats['pool']
  if ref.has_statistics:
    stats = {'mu': ref.mu, 'sigma': ref.sigma, 'mu_s': ref.mu_s, 'sigma_s': ref.sigma_s}
    made_by = ref.extractor or rb.ADM_EXTRACTOR
    note(f'reference statistics from {ref.path} (made by: {made_by})')
    if ref.extractor is None:
      note('  these come from the TF graph the ADM evaluator runs; the sample features here come '
           'from its PyTorch port, so FID differs slightly from the ADM evaluator\'s '
           '(docs/EVALUATION.md)')
  else:
    stats = _statistics(feats)
    note(f'reference statistics computed from the {ref.num_images} images of {ref.path}')
  return stats, pool


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  samples_path, reference_path = config.samples, config.reference
  if config.tiny_images:
    samples_path, reference_path = _tiny_batches(workdir, config.tiny_images, config.seed)
  if not samples_path or not reference_path:
    raise ValueError('set config.samples (an npz whose arr_0 holds uint8 [N, H, W, 3] samples) '
                     'and config.reference (an ADM reference batch, e.g. '
                     'VIRTUAL_imagenet256_labeled.npz from openai/guided-diffusion evaluations/)')
  ref = rb.read_reference_batch(reference_path)
  samples = rb.read_images(samples_path)
  n = min(config.num_samples or len(samples), len(samples))
  if config.num_samples and config.num_samples > len(samples):
    raise ValueError(f'config.num_samples={config.num_samples} but {samples_path} holds only '
                     f'{len(samples)} images')
  if n != STANDARD_SAMPLES:
    warn(f'evaluating {n} samples; reported ImageNet FIDs use {STANDARD_SAMPLES} (FID is biased '
         'upwards for fewer samples, so the numbers are not comparable)')
  if ref.image_size and ref.image_size != samples.shape[1:3]:
    warn(f'samples are {samples.shape[1]}x{samples.shape[2]} but the reference images are '
         f'{ref.image_size[0]}x{ref.image_size[1]}: wrong reference batch?')
  extractor = load_extractor(config)
  note(f'samples: {n} images of {samples.shape[1]}x{samples.shape[2]} from {samples_path}; '
       f'batches of {extractor.batch_size} on {extractor.mesh.size} device(s)')
  stats_ref, pool_ref = _reference(ref, extractor, config.precision_recall)
  feats = extractor.extract_array(samples[:n], 'samples')

  results = {'num_samples': n, 'samples': str(samples_path), 'reference': str(reference_path),
             'inception': config.inception or f'random (seed {config.seed})'}
  results['fid'] = fid_lib.frechet_distance_to(feats['pool'], stats_ref['mu'], stats_ref['sigma'],
                                               method=config.fid_method)
  if stats_ref['mu_s'] is not None and stats_ref['mu_s'].shape == feats['spatial'].shape[1:]:
    results['sfid'] = fid_lib.frechet_distance_to(feats['spatial'], stats_ref['mu_s'],
                                                  stats_ref['sigma_s'], method=config.fid_method)
  is_mean, is_std, splits = inception_score(feats['logits'], config.is_split_size)
  results.update(inception_score=is_mean, inception_score_std=is_std,
                 inception_score_splits=splits)
  if config.precision_recall and pool_ref is not None:
    results['precision'], results['recall'] = precision_recall(pool_ref, feats['pool'], k=ADM_K)
    results['num_reference_images'] = int(len(pool_ref))
  elif config.precision_recall:
    note('precision/recall skipped: the reference holds neither images nor pool features')
  results['seconds'] = round(time.perf_counter() - start, 1)
  if config.write_stats and jax.process_index() == 0:
    rb.write_reference_batch(config.write_stats, pool_features=feats['pool'],
                             **_statistics(feats))
    note(f'wrote the samples\' statistics to {config.write_stats}')
  if jax.process_index() == 0:
    (workdir / 'results.json').write_text(json.dumps(results, indent=1) + '\n')
  shown = ', '.join(f'{k} {results[k]:.4f}' for k in
                    ('fid', 'sfid', 'inception_score', 'precision', 'recall') if k in results)
  note(f'{shown} ({n} samples, {results["seconds"]} s); wrote {workdir / "results.json"}')
  return results
