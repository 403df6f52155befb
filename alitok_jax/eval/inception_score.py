"""Inception Score from the FID Inception's logits, split as the ADM evaluator splits it.

IS = exp(E_x KL(p(y|x) || p(y))) within each split, averaged over splits (openai/improved-gan's
definition, as `Evaluator.compute_inception_score` in openai/guided-diffusion runs it): splits are
consecutive chunks of `split_size` = 5000 samples, so 50,000 samples give the usual 10 splits.
p(y|x) is the softmax over all 1008 logits `pool @ W` (no bias; `models/inception.py`).

Computed in float64 from log-softmax, so classes with underflowing probabilities contribute 0
instead of NaN.
"""

from __future__ import annotations

import numpy as np
import scipy.special

ADM_SPLIT_SIZE = 5000


def inception_score(logits: np.ndarray,
                    split_size: int = ADM_SPLIT_SIZE) -> tuple[float, float, int]:
  """logits [N, K] -> (mean IS over splits, standard deviation over splits, number of splits)."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or logits.shape[0] == 0:
    raise ValueError(f'need logits [N, classes], got shape {logits.shape}')
  if split_size < 1:
    raise ValueError(f'split_size must be positive, got {split_size}')
  log_p = scipy.special.log_softmax(logits, axis=1)  # [N, K]
  scores = []
  for start in range(0, len(log_p), split_size):
    part = log_p[start:start + split_size]
    log_marginal = scipy.special.logsumexp(part, axis=0) - np.log(len(part))  # log mean_x p(y|x)
    kl = np.sum(np.exp(part) * (part - log_marginal), axis=1)
    scores.append(np.exp(np.mean(kl)))
  return float(np.mean(scores)), float(np.std(scores)), len(scores)
