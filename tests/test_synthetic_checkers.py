"""The checkers of the synthetic set (alitok_jax/data/synthetic_checkers.py)."""

from __future__ import annotations

import numpy as np
import pytest

from alitok_jax.data import synthetic
from alitok_jax.data import synthetic_checkers as checkers


def _batch(ds: synthetic.SyntheticImages, n: int, start: int = 0):
  images = np.stack([ds[i]['image'] for i in range(start, start + n)])
  labels = np.array([ds[i]['label'] for i in range(start, start + n)])
  return images, labels


@pytest.mark.parametrize('num_classes,image_size', [(4, 32), (10, 64), (10, 32), (4, 256)])
def test_colour_checker_accuracy_clean_blurred_flipped(num_classes, image_size):
  n = 40 if image_size == 256 else 10 * num_classes
  ds = synthetic.SyntheticImages(num_classes, n, image_size=image_size, seed=5)
  images, labels = _batch(ds, n)
  assert (checkers.colour_class(images, num_classes) == labels).mean() >= 0.95
  assert (checkers.colour_class(images[:, :, ::-1], num_classes) == labels).mean() >= 0.95
  blurred = checkers.blur(images, 4)  # 4x down and back up
  assert blurred.shape == images.shape and blurred.dtype == np.float32
  assert (checkers.colour_class(blurred, num_classes) == labels).mean() >= 0.9
  # float input in [0, 1] is accepted as well as uint8
  assert (checkers.colour_class(images.astype(np.float32) / 255, num_classes) == labels).mean() \
      >= 0.95


def test_colour_checker_degrades_gracefully():
  """Heavier blur costs accuracy step by step, not all at once; pixel noise costs nothing."""
  ds = synthetic.SyntheticImages(10, 100, image_size=64, seed=9)
  images, labels = _batch(ds, 100)
  acc = {f: (checkers.colour_class(checkers.blur(images, f), 10) == labels).mean()
         for f in (8, 16)}
  assert acc[8] >= 0.85 and acc[16] >= 0.3  # 16x: a 4x4 thumbnail, still 3x chance
  noisy = np.clip(images / 255 + np.random.default_rng(0).normal(0, 0.1, images.shape), 0, 1)
  assert (checkers.colour_class(noisy, 10) == labels).mean() >= 0.95


def test_colour_checker_many_classes():
  ds = synthetic.SyntheticImages(synthetic.MAX_CLASSES, 200, image_size=64, seed=6)
  images, labels = _batch(ds, 200)
  assert (checkers.colour_class(images, synthetic.MAX_CLASSES) == labels).mean() >= 0.95


def test_colour_checker_is_not_fooled_by_flat_images():
  """A flat image (the trivial mean-colour reconstruction) carries no class: its guesses vary
  only with its colour, and the checker never fails on it."""
  ds = synthetic.SyntheticImages(10, 100, image_size=32, seed=7)
  images, labels = _batch(ds, 100)
  flat = np.broadcast_to(images.mean(axis=(0, 1, 2), keepdims=True), images.shape)
  guesses = checkers.colour_class(flat.astype(np.uint8), 10)
  assert guesses.shape == (100,) and len(set(guesses.tolist())) == 1
  assert (guesses == labels).mean() <= 0.2  # chance level, not the 100% of real images


def test_colour_checker_rejects_bad_input():
  with pytest.raises(ValueError, match='square'):
    checkers.colour_class(np.zeros((2, 16, 32, 3), np.uint8), 4)
  with pytest.raises(ValueError, match='at least'):
    checkers.colour_class(np.zeros((2, 8, 8, 3), np.uint8), 4)
