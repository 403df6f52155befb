"""The `fid` mode: gFID, sFID, Inception Score, precision and recall of a sample batch.

    python -m alitok_jax.main --config=configs/fid.py --workdir=out/fid \
        --config.samples=samples_xl.npz --config.reference=VIRTUAL_imagenet256_labeled.npz \
        --config.inception=weights/inception

What the ADM evaluator reports, computed with this package's Inception (`eval/generation.py`;
docs/EVALUATION.md says how the two differ): by default with ADM's preprocessing
(`config.preprocess='adm'`) and ADM's float16 precision/recall distances
(`config.pr_precision='float16'`). IS needs the Inception's 1008-class head: without it a line says
why IS is missing. Prints progress and the results, writes `workdir/results.json`;
`config.write_stats` also saves the samples' statistics (and their preprocessing) as an ADM-format
npz (a new reference set).
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import ml_collections
import numpy as np

from alitok_jax.commands import loading
from alitok_jax.convert.inception import inception_provenance
from alitok_jax.data import synthetic
from alitok_jax.errors import ConfigError
from alitok_jax.eval import features
from alitok_jax.eval import generation
from alitok_jax.eval import reference_batch as rb
from alitok_jax.eval.precision_recall import DISTANCES
from alitok_jax.progress import note, warn

STANDARD_SAMPLES = 50_000


def _tiny_batches(workdir: pathlib.Path, n: int, seed: int) -> tuple[str, str]:
  """Writes two small sets of test-pattern images (a smoke test's 'samples' and 'reference')."""
  samples, reference = workdir / 'tiny_samples.npz', workdir / 'tiny_reference.npz'
  np.savez(samples, arr_0=synthetic.pattern_images(n, 64, seed))
  np.savez(reference, arr_0=synthetic.pattern_images(n, 64, seed + 1))
  note(f'wrote {n} generated test-pattern images each to {samples} and {reference}')
  return str(samples), str(reference)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  samples_path, reference_path = config.samples, config.reference
  if config.tiny_images:
    samples_path, reference_path = _tiny_batches(workdir, config.tiny_images, config.seed)
  if not samples_path or not reference_path:
    raise ConfigError('set config.samples (an npz whose arr_0 holds uint8 [N, H, W, 3] samples) '
                      'and config.reference (an ADM reference batch, e.g. '
                      'VIRTUAL_imagenet256_labeled.npz from openai/guided-diffusion evaluations/)')
  preprocess = features.check_preprocess(config.preprocess)
  if config.pr_precision not in DISTANCES:
    raise ConfigError(f'config.pr_precision={config.pr_precision!r} is not one of '
                      f'{", ".join(DISTANCES)} (float16: the ADM evaluator\'s distances)')
  ref = rb.read_reference_batch(reference_path)
  samples = rb.read_images(samples_path)
  n = min(config.num_samples or len(samples), len(samples))
  if config.num_samples and config.num_samples > len(samples):
    raise ConfigError(f'config.num_samples={config.num_samples} but {samples_path} holds only '
                      f'{len(samples)} images')
  if n != STANDARD_SAMPLES:
    warn(f'evaluating {n} samples; reported ImageNet FIDs use {STANDARD_SAMPLES} (FID is biased '
         'upwards for fewer samples, so the numbers are not comparable)')
  if ref.image_size and ref.image_size != samples.shape[1:3]:
    warn(f'samples are {samples.shape[1]}x{samples.shape[2]} but the reference images are '
         f'{ref.image_size[0]}x{ref.image_size[1]}: wrong reference batch?')
  inc_config, inc_params = loading.inception(config.inception, random=config.random_inception,
                                             seed=config.seed)
  provenance = inception_provenance(config.inception) if config.inception else None
  with_head = provenance is None or provenance.has_logits_head
  extractor = features.FeatureExtractor(inc_config, inc_params, batch_size=config.batch_size,
                                        preprocess=preprocess, logits=with_head)
  note(f'samples: {n} images of {samples.shape[1]}x{samples.shape[2]} from {samples_path}; '
       f'batches of {extractor.batch_size} on {extractor.mesh.size} device(s)')
  stats_ref, pool_ref = generation.reference_statistics(ref, extractor, config.precision_recall,
                                                        str(samples_path))
  feats = extractor.extract_array(samples[:n], 'samples')

  results = {'num_samples': n, 'samples': str(samples_path), 'reference': str(reference_path),
             'inception': config.inception or f'random (seed {config.seed})',
             'preprocess': preprocess, 'pr_precision': config.pr_precision}
  results.update(generation.generation_metrics(
      feats, stats_ref, pool_ref, fid_method=config.fid_method,
      is_split_size=config.is_split_size, with_precision_recall=config.precision_recall,
      pr_precision=config.pr_precision))
  if 'logits' not in feats:
    note(f'IS not reported: {config.inception}: {provenance.no_inception_score_reason}')
  results['seconds'] = round(time.perf_counter() - start, 1)
  if config.write_stats and jax.process_index() == 0:
    rb.write_reference_batch(config.write_stats, pool_features=feats['pool'],
                             preprocess=preprocess, **generation.feature_statistics(feats))
    note(f'wrote the samples\' statistics to {config.write_stats}')
  if jax.process_index() == 0:
    (workdir / 'results.json').write_text(json.dumps(results, indent=1) + '\n')
  shown = ', '.join(f'{k} {results[k]:.4f}' for k in
                    ('fid', 'sfid', 'inception_score', 'precision', 'recall') if k in results)
  note(f'{shown} ({n} samples, {results["seconds"]} s); wrote {workdir / "results.json"}')
  return results
