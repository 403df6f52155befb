"""gFID, sFID, Inception Score, precision and recall of sample features against a reference
batch: what the ADM evaluator (openai/guided-diffusion `evaluations/evaluator.py`) reports.

- FID / sFID against the reference's stored `mu`/`sigma` (`mu_s`/`sigma_s`), or against
  statistics of its images when it stores none (`reference_statistics`);
- IS over consecutive splits (ADM: 5000 samples each), when the Inception has its 1008-class head
  (the features have 'logits');
- precision / recall (k = 3, float16 distances as ADM's by default) against the reference's pool
  features, from its images (10,000 in ADM's ImageNet batch) or stored ones.
Stored statistics or pool features are used only when they were made with the preprocessing the
samples get (`reference_batch.check_same_preprocess`).
The `fid` command (`commands/fid.py`) reads the batches and writes the results.
"""

from __future__ import annotations

import numpy as np

from alitok_jax.eval import fid as fid_lib
from alitok_jax.eval import reference_batch as rb
from alitok_jax.eval.inception_score import inception_score
from alitok_jax.eval.precision_recall import ADM_K, precision_recall
from alitok_jax.progress import note


def feature_statistics(feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{'mu', 'sigma'} of the pool features and {'mu_s', 'sigma_s'} of the spatial ones."""
  mu, sigma = fid_lib.statistics(feats['pool'])
  mu_s, sigma_s = fid_lib.statistics(feats['spatial'])
  return {'mu': mu, 'sigma': sigma, 'mu_s': mu_s, 'sigma_s': sigma_s}


def reference_statistics(ref: rb.ReferenceBatch, extractor, want_pool: bool, samples: str
                         ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
  """(statistics, pool features for precision/recall or None) of a reference batch.

  Stored statistics are used as they are; features are extracted from the reference's images
  only when it stores no statistics, or when precision/recall need pool features it lacks.
  Stored ones made with another preprocessing than `extractor.preprocess` (which the samples
  file `samples` gets) raise PreprocessMismatchError.
  """
  if ref.has_statistics or ref.pool_features is not None:
    rb.check_same_preprocess(ref.path, ref.preprocess, samples, extractor.preprocess)
  pool = None if ref.pool_features is None else np.asarray(ref.pool_features)
  feats = None
  if ref.num_images and (not ref.has_statistics or (want_pool and pool is None)):
    feats = extractor.extract_array(ref.images(), 'reference images')
    pool = feats['pool']
  if ref.has_statistics:
    stats = {'mu': ref.mu, 'sigma': ref.sigma, 'mu_s': ref.mu_s, 'sigma_s': ref.sigma_s}
    made_by = ref.extractor or rb.ADM_EXTRACTOR
    note(f'reference statistics from {ref.path} (made by: {made_by}; preprocess '
         f'{ref.preprocess!r})')
    if ref.extractor is None:
      note('  these come from the TF graph the ADM evaluator runs; the sample features here come '
           'from a port of it (same weights and preprocessing, other arithmetic), so FID can '
           'differ from the ADM evaluator\'s in the last digits (docs/EVALUATION.md)')
  else:
    stats = feature_statistics(feats)
    note(f'reference statistics computed from the {ref.num_images} images of {ref.path}')
  return stats, pool


def generation_metrics(feats: dict[str, np.ndarray], stats_ref: dict[str, np.ndarray],
                       pool_ref: np.ndarray | None, *, fid_method: str, is_split_size: int,
                       with_precision_recall: bool, pr_precision: str = 'float16') -> dict:
  """fid, sfid (when the reference has spatial statistics of this size), inception_score (and
  its std and number of splits; when `feats` has 'logits'), precision / recall (when asked and
  pool features exist; distances in `pr_precision`, 'float16' as ADM or 'float32')."""
  results = {'fid': fid_lib.frechet_distance_to(feats['pool'], stats_ref['mu'], stats_ref['sigma'],
                                                method=fid_method)}
  if stats_ref['mu_s'] is not None and stats_ref['mu_s'].shape == feats['spatial'].shape[1:]:
    results['sfid'] = fid_lib.frechet_distance_to(feats['spatial'], stats_ref['mu_s'],
                                                  stats_ref['sigma_s'], method=fid_method)
  if 'logits' in feats:
    is_mean, is_std, splits = inception_score(feats['logits'], is_split_size)
    results.update(inception_score=is_mean, inception_score_std=is_std,
                   inception_score_splits=splits)
  if with_precision_recall and pool_ref is not None:
    results['precision'], results['recall'] = precision_recall(pool_ref, feats['pool'], k=ADM_K,
                                                               distances=pr_precision)
    results['num_reference_images'] = int(len(pool_ref))
  elif with_precision_recall:
    note('precision/recall skipped: the reference holds neither images nor pool features')
  return results
