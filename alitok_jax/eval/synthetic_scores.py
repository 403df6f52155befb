"""The figures of a run on the built-in synthetic set, each next to the trivial answers to beat.

The demo (and any run on `data/synthetic.py`) is judged by what its pictures show, with the
set's checkers (`data/synthetic_checkers.py`):
- reconstructions of held-out images: the share whose *shape* (colour-blind checker) is the
  original's, PSNR and SSIM;
- samples: the share whose shape is their class's shape (shape consistency), the share the
  colour checker names as their class (colour consistency), and the share that are near-copies
  of training images (a model that memorised its data would score 100% consistency).

Every figure comes with baselines that a useless model would reach: chance, each image's mean
colour, the originals blurred 4x (a blob in the right place and colour), the class's mean image,
and whatever the caller adds (decoded random codes, a copy of the training set). A figure that a
baseline reaches says nothing; the tests hold these baselines to low scores.
"""

from __future__ import annotations

import numpy as np

from alitok_jax.data import synthetic, synthetic_checkers
from alitok_jax.eval import image_metrics

NEAR_COPY_PSNR = 30.0  # dB: a sample this close to a training image counts as a copy of it


def _float(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images)
  return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def mean_colour(images: np.ndarray) -> np.ndarray:
  """Each image replaced by its mean colour: float [B, S, S, 3]."""
  x = _float(images)
  return np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape).copy()


def class_means(images: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """The mean image of every class present in (images, labels): float [K, S, S, 3] (zeros for a
  class with no image)."""
  x, labels = _float(images), np.asarray(labels)
  out = np.zeros((num_classes, *x.shape[1:]), np.float32)
  for k in range(num_classes):
    if (labels == k).any():
      out[k] = x[labels == k].mean(axis=0)
  return out


def _shape_hits(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  return synthetic_checkers.shape_class(images) == np.asarray(labels) % len(synthetic.SHAPES)


def reconstruction_scores(originals: np.ndarray, labels: np.ndarray,
                          reconstructions: np.ndarray) -> dict:
  """Shape accuracy, PSNR and SSIM of reconstructions, each with its baselines.

  originals uint8 [B, S, S, 3] with their labels [B]; reconstructions uint8 or float in [0, 1].
  Baselines: `originals` (the checker's own accuracy: the ceiling), `blurred_x4`, `mean_colour`
  and `chance` (1 / 10 shapes).
  """
  x, recon = _float(originals), _float(reconstructions)
  trivial = {'blurred_x4': synthetic_checkers.blur(originals, 4), 'mean_colour': mean_colour(x)}
  hits = _shape_hits(recon, labels)
  scores = {
      'shape_accuracy': float(hits.mean()),
      'psnr': float(image_metrics.psnr(x, recon).mean()),
      'ssim': float(image_metrics.ssim(x, recon).mean()),
      'baselines': {
          'shape_accuracy': {'originals': float(_shape_hits(originals, labels).mean()),
                             **{k: float(_shape_hits(v, labels).mean())
                                for k, v in trivial.items()},
                             'chance': 1.0 / len(synthetic.SHAPES)},
          'psnr': {k: float(image_metrics.psnr(x, v).mean()) for k, v in trivial.items()},
          'ssim': {k: float(image_metrics.ssim(x, v).mean()) for k, v in trivial.items()},
      },
      'per_image': {'shape_hit': hits,
                    'psnr': np.asarray(image_metrics.psnr(x, recon), np.float32)},
  }
  return scores


def near_copies(samples: np.ndarray, training: np.ndarray,
                threshold_db: float = NEAR_COPY_PSNR) -> np.ndarray:
  """bool [B]: whether each sample is within `threshold_db` PSNR of some training image."""
  s, t = _float(samples).reshape(len(samples), -1), _float(training).reshape(len(training), -1)
  best = np.full(len(s), np.inf, np.float32)
  for i in range(0, len(t), 512):  # squared distances in chunks of training images
    chunk = t[i:i + 512]
    d = (s * s).sum(1)[:, None] + (chunk * chunk).sum(1)[None] - 2.0 * s @ chunk.T
    best = np.minimum(best, d.min(axis=1))
  mse = np.maximum(best, 0.0) / s.shape[1]
  return -10.0 * np.log10(np.maximum(mse, 1e-12)) >= threshold_db


def sample_scores(samples: np.ndarray, labels: np.ndarray, num_classes: int, *,
                  training_images: np.ndarray | None = None,
                  training_labels: np.ndarray | None = None,
                  baselines: dict | None = None) -> dict:
  """Shape and colour consistency of class-conditional samples, with baselines.

  samples uint8 or float [B, S, S, 3] drawn for `labels` [B]. training_images / _labels: images
  the model was trained on; near-copies among the samples are counted, and the class mean images
  (a baseline) are theirs (else the samples'). `baselines`: name -> images [B, S, S, 3] scored
  the same way for the same labels (e.g. decoded random codes, training images of the same
  classes); the class mean images and chance are always there.
  """
  labels = np.asarray(labels)
  have_training = training_images is not None

  def hits(images):
    out = {'shape_hit': _shape_hits(images, labels),
           'colour_hit': synthetic_checkers.colour_class(images, num_classes) == labels}
    if have_training:
      out['near_copy'] = near_copies(images, training_images)
    return out

  def summary(per_image):
    out = {'shape_consistency': float(per_image['shape_hit'].mean()),
           'colour_consistency': float(per_image['colour_hit'].mean())}
    if 'near_copy' in per_image:
      out['near_copies'] = float(per_image['near_copy'].mean())
    return out

  means = class_means(training_images if have_training else samples,
                      training_labels if have_training else labels, num_classes)
  trivial = {'class_mean_image': summary(hits(means[labels])),
             **{k: summary(hits(v)) for k, v in (baselines or {}).items()},
             'chance': {'shape_consistency': 1.0 / len(synthetic.SHAPES),
                        'colour_consistency': 1.0 / num_classes}}
  per_image = hits(samples)
  return {**summary(per_image), 'near_copy_db': NEAR_COPY_PSNR, 'baselines': trivial,
          'per_image': per_image}


def per_class(labels: np.ndarray, num_classes: int, **hits: np.ndarray) -> list[dict]:
  """One row per class: the mean of every per-image array in `hits` over that class's images."""
  labels = np.asarray(labels)
  rows = []
  for k in range(num_classes):
    style = synthetic.class_style(k)
    row = {'class': k, 'shape': style['shape'], 'colours': f"{style['foreground']} on "
                                                          f"{style['background']}"}
    for name, values in hits.items():
      values = np.asarray(values, np.float32)
      row[name] = float(values[labels == k].mean()) if (labels == k).any() else float('nan')
    rows.append(row)
  return rows
