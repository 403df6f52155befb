"""The built-in synthetic class-conditional set (alitok_jax/data/synthetic.py); its checkers are
tested in test_synthetic_checkers.py."""

from __future__ import annotations

import numpy as np
import pytest

from alitok_jax.data import synthetic


def _batch(ds: synthetic.SyntheticImages, n: int, start: int = 0):
  images = np.stack([ds[i]['image'] for i in range(start, start + n)])
  labels = np.array([ds[i]['label'] for i in range(start, start + n)])
  return images, labels


def test_deterministic_from_seed_and_index():
  a = synthetic.SyntheticImages(4, 100, image_size=32, seed=3)
  b = synthetic.SyntheticImages(4, 100, image_size=32, seed=3)
  c = synthetic.SyntheticImages(4, 100, image_size=32, seed=4)
  for i in (0, 7, 99):
    np.testing.assert_array_equal(a[i]['image'], b[i]['image'])
    assert a[i]['label'] == c[i]['label']
    assert not np.array_equal(a[i]['image'], c[i]['image'])
  # Reading order does not matter: index 7 read after 99 is the same image.
  np.testing.assert_array_equal(a[7]['image'], b[7]['image'])
  assert a[0]['image'].dtype == np.uint8 and a[0]['image'].shape == (32, 32, 3)
  assert a[0]['label'].dtype == np.int32


def test_labels_balanced():
  ds = synthetic.SyntheticImages(7, 70, image_size=16)
  labels = np.array([ds[i]['label'] for i in range(len(ds))])
  np.testing.assert_array_equal(np.bincount(labels), [10] * 7)


def test_every_class_has_its_own_shape_and_colour():
  styles = [synthetic.class_style(c) for c in range(synthetic.MAX_CLASSES)]
  pairs = {(s['shape'], s['foreground']) for s in styles}
  assert len(pairs) == synthetic.MAX_CLASSES
  first = styles[:10]  # the demo's classes differ in both shape and colour
  assert len({s['shape'] for s in first}) == 10 and len({s['foreground'] for s in first}) == 10
  for s in styles:
    assert np.linalg.norm(s['fg_rgb'] - s['bg_rgb']) >= 0.75  # the shape stands out
    np.testing.assert_array_equal(s['band_code'], s['band_code'][::-1])  # flips keep the class


def test_bad_arguments():
  with pytest.raises(ValueError, match='num_classes'):
    synthetic.SyntheticImages(synthetic.MAX_CLASSES + 1, 10)
  with pytest.raises(ValueError, match='image_size'):
    synthetic.SyntheticImages(4, 10, image_size=8)
  with pytest.raises(IndexError):
    synthetic.SyntheticImages(4, 10, image_size=16)[10]


def test_class_shows_in_the_top_patch_row():
  """The top 1/16 of the image (what the 17 prefix tokens reconstruct) alone gives the class."""
  ds = synthetic.SyntheticImages(10, 200, image_size=64, seed=1)
  images, labels = _batch(ds, 200)
  band = images[:, :4].astype(np.float32).reshape(200, -1, 3).mean(axis=1)
  centroids = np.stack([band[labels == c][:10].mean(axis=0) for c in range(10)])
  guess = np.argmin(((band[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
  assert (guess == labels).mean() == 1.0


def test_class_structure_in_every_row():
  """Each pixel row's mean colour alone tells the 4 classes apart far above chance (25%),
  perfectly in the top band."""
  ds = synthetic.SyntheticImages(4, 160, image_size=32, seed=2)
  images, labels = _batch(ds, 160)
  rows = images.astype(np.float32).mean(axis=2)  # [B, S, 3] mean colour of every row
  for y in range(32):
    feat = rows[:, y]
    centroids = np.stack([feat[labels == c][:20].mean(axis=0) for c in range(4)])
    guess = np.argmin(((feat[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (guess == labels).mean() > (0.99 if y < 2 else 0.6), f'row {y}'
  # And rows are not flat: the stripes vary along every row of the body.
  smooth = images.astype(np.float32).reshape(160, 32, 8, 4, 3).mean(axis=3)  # 4-pixel boxes
  assert (smooth[:, 2:].std(axis=2).max(axis=-1) > 4).mean() > 0.95


def test_draw_in_another_class_colours():
  """`colours_of` changes the colours, stripes and band around the same shape, drawn from the
  same random stream: the shape's pixels are where they were."""
  for label, other, size in ((3, 7, 32), (5, 42, 64)):
    plain = synthetic.draw(label, size, np.random.default_rng([8, label]))
    np.testing.assert_array_equal(
        plain, synthetic.draw(label, size, np.random.default_rng([8, label]), colours_of=label))
    swapped = synthetic.draw(label, size, np.random.default_rng([8, label]), colours_of=other)
    inside = []
    for image, style in ((plain, synthetic.class_style(label)),
                         (swapped, synthetic.class_style(other))):
      body = image[size // 8:].astype(np.float32) / 255
      inside.append(np.linalg.norm(body - style['fg_rgb'], axis=-1) < 0.15)
      top_band = image[:max(1, size // 16)].astype(np.float32).mean(axis=(0, 1)) / 255
      # the band is in the colour scheme's colours: lit cells fg, dimmed 0.45 fg + 0.55 bg
      code = style['band_code'].mean()
      want = code * style['fg_rgb'] + (1 - code) * (0.45 * style['fg_rgb'] + 0.55 * style['bg_rgb'])
      assert np.abs(top_band - want).max() < 0.06
    assert inside[0].sum() > 20
    assert (inside[0] != inside[1]).mean() < 0.01
