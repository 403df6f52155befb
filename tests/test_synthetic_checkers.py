"""The checkers of the synthetic set (alitok_jax/data/synthetic_checkers.py).

The shape checker is tested on images drawn here from seeds no other test or the checkers' own
references use (60_000 +), 20 per shape, in their own colours and in every other class's.
"""

from __future__ import annotations

import numpy as np
import pytest

from alitok_jax.data import synthetic
from alitok_jax.data import synthetic_checkers as checkers

N_SHAPES = len(synthetic.SHAPES)


def _batch(ds: synthetic.SyntheticImages, n: int, start: int = 0):
  images = np.stack([ds[i]['image'] for i in range(start, start + n)])
  labels = np.array([ds[i]['label'] for i in range(start, start + n)])
  return images, labels


def _swapped(k: int, j: int) -> int:
  """A class whose colours draw shape k in its example j: every other shape's class, with the
  colour schemes of all 100 classes in turn, never k's own shape."""
  return 10 * (j % 10) + (k + 1 + j % 9) % N_SHAPES


def _shapes(image_size: int, seed: int, per_shape: int = 20, swap: bool = False):
  """uint8 images [10 * per_shape, S, S, 3] of every shape and their shape indices."""
  images = [synthetic.draw(k, image_size, np.random.default_rng([seed, k, j]),
                           colours_of=_swapped(k, j) if swap else None)
            for k in range(N_SHAPES) for j in range(per_shape)]
  return np.stack(images), np.repeat(np.arange(N_SHAPES), per_shape)


def _accuracy(images, shapes) -> float:
  return float(np.mean(checkers.shape_class(images) == shapes))


# ---------------------------------------------------------------------------------------------
# The shape checker


@pytest.mark.parametrize('image_size', [32, 64])
def test_shape_checker_clean_and_in_other_colours(image_size):
  images, shapes = _shapes(image_size, 60_001)
  assert _accuracy(images, shapes) >= 0.98
  assert _accuracy(images[:, :, ::-1], shapes) >= 0.98  # flips keep the shape
  assert _accuracy(images.astype(np.float32) / 255, shapes) >= 0.98  # float input as well
  swapped, shapes = _shapes(image_size, 60_002, swap=True)
  assert _accuracy(swapped, shapes) >= 0.98
  # The colour checker names the colours' class instead (what the shape checker is for), where
  # the colours are those of one of the first 10 classes (j = 0, 10).
  colours = np.array([_swapped(k, j) for k in range(N_SHAPES) for j in range(20)])
  first = colours < 10
  assert np.mean(checkers.colour_class(swapped[first], 10) == colours[first]) >= 0.6


@pytest.mark.parametrize('image_size', [32, 64])
def test_shape_checker_noise_and_mild_blur(image_size):
  images, shapes = _shapes(image_size, 60_003)
  rng = np.random.default_rng(60_003)
  noisy = np.clip(images / 255 + rng.normal(0, 0.1, images.shape), 0, 1)
  assert _accuracy(noisy, shapes) >= 0.95
  if image_size == 64:  # at half resolution the shapes are still sharp enough
    assert _accuracy(checkers.blur(images, 2), shapes) >= 0.9


@pytest.mark.parametrize('image_size', [32, 64])
def test_shape_checker_rejects_blobs_and_trivial_images(image_size):
  """Blurred shapes, class means, flat colours and noise show no shape; a disc in every class's
  colours is a disc (right only for the disc class)."""
  s = image_size
  images, shapes = _shapes(s, 60_004)
  assert _accuracy(checkers.blur(images, 4), shapes) <= 0.4
  means = np.stack([images[shapes == k].mean(axis=0) / 255 for k in range(N_SHAPES)])
  assert _accuracy(means, np.arange(N_SHAPES)) <= 0.1
  flat = np.stack([np.broadcast_to(synthetic.class_style(k)['fg_rgb'], (s, s, 3))
                   for k in range(N_SHAPES)])
  np.testing.assert_array_equal(checkers.shape_class(flat), -1)
  labels = np.arange(20) % N_SHAPES
  discs = np.stack([synthetic.draw(0, s, np.random.default_rng([60_005, i]), colours_of=label)
                    for i, label in enumerate(labels)])
  np.testing.assert_array_equal(checkers.shape_class(discs), 0)
  assert checkers.shape_accuracy(discs, labels) == 0.1
  noise = np.random.default_rng(60_006).integers(0, 256, (40, s, s, 3), dtype=np.uint8)
  assert np.mean(checkers.shape_class(noise) == -1) >= 0.95


def test_shape_checker_at_128():
  images, shapes = _shapes(128, 60_007, per_shape=5)
  swapped, _ = _shapes(128, 60_008, per_shape=5, swap=True)
  assert _accuracy(images, shapes) >= 0.98 and _accuracy(swapped, shapes) >= 0.98
  assert _accuracy(checkers.blur(images, 4), shapes) <= 0.4


def test_shape_confusion_and_accuracy():
  images, shapes = _shapes(32, 60_009, per_shape=4)
  images[::7] = 128  # flat: no shape (column 10)
  counts = checkers.shape_confusion(images, shapes)
  assert counts.shape == (N_SHAPES, N_SHAPES + 1) and counts.sum() == len(images)
  assert counts[:, N_SHAPES].sum() == len(images[::7])
  assert np.trace(counts) == len(images) - len(images[::7])
  labels = shapes + 10 * (np.arange(len(shapes)) % 3)  # labels with the same shape
  assert checkers.shape_accuracy(images, labels) == np.trace(counts) / len(images)


def test_shape_checker_rejects_bad_input():
  with pytest.raises(ValueError, match='square'):
    checkers.shape_class(np.zeros((2, 16, 32, 3), np.uint8))
  with pytest.raises(ValueError, match='at least'):
    checkers.shape_class(np.zeros((2, 8, 8, 3), np.uint8))


# ---------------------------------------------------------------------------------------------
# The colour checker


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
