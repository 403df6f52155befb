"""The demo's figures fail the trivial answers: the mean image, a blurred image, the right colour
without the right shape, random codes; a copy of the training set passes consistency but is
caught as copies; held-out originals themselves pass."""

from __future__ import annotations

import numpy as np
import pytest

from alitok_jax.data import synthetic, synthetic_checkers
from alitok_jax.eval import synthetic_scores

K = 10


def _images(n: int, size: int, seed: int, colours_of=None):
  rng = np.random.default_rng([seed, 7])
  labels = np.arange(n) % K
  images = np.stack([synthetic.draw(int(k), size, rng,
                                    colours_of=None if colours_of is None else int(colours_of[i]))
                     for i, k in enumerate(labels)])
  return images, labels.astype(np.int32)


@pytest.fixture(scope='module')
def held_out():
  return _images(100, 32, seed=11)


def test_reconstruction_scores_rank_the_originals_above_every_trivial_answer(held_out):
  originals, labels = held_out
  perfect = synthetic_scores.reconstruction_scores(originals, labels, originals)
  assert perfect['shape_accuracy'] >= 0.98 and perfect['ssim'] > 0.99
  base = perfect['baselines']
  assert base['shape_accuracy']['originals'] == perfect['shape_accuracy']
  assert base['shape_accuracy']['blurred_x4'] <= 0.1  # a blob in the right place and colour
  assert base['shape_accuracy']['mean_colour'] <= 0.05
  assert base['psnr']['mean_colour'] < 17 and base['psnr']['blurred_x4'] < 24
  # Reconstructions that are blurred (x4) score their baseline; a 2x blur keeps most shapes.
  blurred = synthetic_scores.reconstruction_scores(originals, labels,
                                                   synthetic_checkers.blur(originals, 4))
  assert blurred['shape_accuracy'] == base['shape_accuracy']['blurred_x4']
  assert blurred['psnr'] == pytest.approx(base['psnr']['blurred_x4'])
  assert len(blurred['per_image']['shape_hit']) == len(originals)


def test_sample_scores_fail_means_colours_without_shapes_and_noise(held_out):
  images, labels = held_out
  training, train_labels = _images(200, 32, seed=12)
  # The right colours and band, the wrong shape: every class drawn as class 0's shape (a disc).
  discs = np.stack([synthetic.draw(0, 32, np.random.default_rng(i), colours_of=int(k))
                    for i, k in enumerate(labels)])
  noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
  scores = synthetic_scores.sample_scores(
      images, labels, K, training_images=training, training_labels=train_labels,
      baselines={'disc_in_class_colours': discs, 'noise': noise,
                 'copy_of_training_images': training[:len(labels)]})
  b = scores['baselines']
  assert scores['shape_consistency'] >= 0.98  # fresh images of the right class
  assert scores['near_copies'] == 0.0  # and not copies of the training images
  assert b['class_mean_image']['shape_consistency'] <= 0.05
  assert b['disc_in_class_colours']['shape_consistency'] == pytest.approx(0.1, abs=0.02)
  assert b['disc_in_class_colours']['colour_consistency'] >= 0.8  # what a colour checker misses
  assert b['noise']['shape_consistency'] <= 0.05
  # A copy of the training set passes consistency: the near-copy figure is what catches it.
  assert b['copy_of_training_images']['shape_consistency'] >= 0.98
  assert b['copy_of_training_images']['near_copies'] == 1.0
  assert b['chance'] == {'shape_consistency': 0.1, 'colour_consistency': 0.1}


def test_random_codes_decode_to_no_shape():
  """Uniformly random codes through a (random) tokenizer: nothing a checker calls a shape."""
  from alitok_jax.models import build, functional, variants  # noqa: PLC0415

  cfg = variants.TOKENIZER['demo_stage2']
  graphdef, _ = build.abstract(cfg)
  params = build.random_params(cfg, seed=0)
  codes = np.random.default_rng(0).integers(0, cfg.codebook_size, (20, cfg.num_latent_tokens))
  images = np.asarray(functional.decode(graphdef, params, codes))
  labels = np.arange(20) % K
  scores = synthetic_scores.sample_scores(images, labels, K)
  assert scores['shape_consistency'] <= 0.1


def test_near_copies_threshold():
  images, _ = _images(20, 32, seed=3)
  noisy = np.clip(images.astype(np.int16) + np.random.default_rng(0).integers(
      -2, 3, images.shape), 0, 255).astype(np.uint8)  # ~41 dB from the originals
  assert synthetic_scores.near_copies(noisy, images).all()
  others, _ = _images(20, 32, seed=4)
  assert not synthetic_scores.near_copies(others, images).any()


def test_per_class_rows():
  labels = np.array([0, 0, 1, 2])
  rows = synthetic_scores.per_class(labels, 3, hit=np.array([1, 0, 1, 0]))
  assert [r['hit'] for r in rows] == [0.5, 1.0, 0.0]
  assert rows[0]['shape'] == 'disc' and ' on ' in rows[0]['colours']
