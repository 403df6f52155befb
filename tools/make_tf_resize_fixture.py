"""Recomputes tests/fixtures/tf1_resize_bilinear.npz: TF1's legacy bilinear resize to 299.

The ADM evaluator's graph resizes its 0..255 float input with TF1's `ResizeBilinear`
(`align_corners=False, half_pixel_centers=False`); `models/inception.py` reproduces it with
matrices, and tests/test_adm_eval.py checks it against this fixture. Run it where tensorflow is
installed (not a dependency of this package):

    python3 -m venv /tmp/vtf && /tmp/vtf/bin/pip install tensorflow-cpu numpy
    /tmp/vtf/bin/python tools/make_tf_resize_fixture.py

The fixture holds random uint8 images and TF's float32 outputs for the whole 299x299 image,
stored losslessly and small: each output's float32 bit pattern minus that of a prediction
(`predict`: TF's CPU kernel formula in float32 numpy; with tensorflow-cpu 2.21 every residual is
0), compressed. `decode` gives back TF's outputs bit for bit, whatever the prediction. Decoding
needs only numpy (tests/test_adm_eval.py imports this file).
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / 'tests/fixtures/tf1_resize_bilinear.npz'
SIZE = 299
SHAPES = ((37, 53), (64, 64), (256, 256))  # (H, W) of the input images
COUNTS = (2, 1, 1)  # images of each shape
SEED = 20240601


def make_inputs() -> dict[str, np.ndarray]:
  """{'images_HxW': uint8 [n, H, W, 3]} random images (noise: the hardest case for a resize)."""
  rng = np.random.default_rng(SEED)
  return {f'images_{h}x{w}': rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
          for (h, w), n in zip(SHAPES, COUNTS)}


def _legacy_coordinates(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(lower, upper, lerp) of each output as TF1's legacy kernel computes them, in float32."""
  src = np.arange(n_out, dtype=np.float32) * (np.float32(n_in) / np.float32(n_out))
  lower = np.floor(src)
  return (lower.astype(np.int64), np.minimum(np.ceil(src).astype(np.int64), n_in - 1),
          (src - lower)[:, None])


def predict(images: np.ndarray) -> np.ndarray:
  """uint8 [n, H, W, 3] -> float32 [n, 299, 299, 3]: the prediction the residuals are taken from.

  TF's CPU kernel's formula in float32 numpy (top + (bottom - top) * y_lerp of the two
  x-interpolated rows): nearly every residual is 0.
  """
  y0, y1, fy = _legacy_coordinates(images.shape[1], SIZE)
  x0, x1, fx = _legacy_coordinates(images.shape[2], SIZE)
  x = images.astype(np.float32)

  def along_x(rows):
    left, right = rows[:, :, x0], rows[:, :, x1]
    return left + (right - left) * fx

  top, bottom = along_x(x[:, y0]), along_x(x[:, y1])
  return top + (bottom - top) * fy[:, :, None]


def _bits(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(x, np.float32).view(np.int32).astype(np.int64)


def encode(images: np.ndarray, outputs: np.ndarray) -> np.ndarray:
  """TF's float32 outputs -> the smallest integer residuals that `decode` inverts."""
  residual = _bits(outputs) - _bits(predict(images))
  for dtype in (np.int8, np.int16, np.int32):
    if np.abs(residual).max() <= np.iinfo(dtype).max:
      return residual.astype(dtype)
  raise ValueError('outputs too far from the prediction: not a bilinear resize?')


def decode(images: np.ndarray, residual: np.ndarray) -> np.ndarray:
  """The stored TF outputs, float32 [n, 299, 299, 3], bit for bit."""
  bits = _bits(predict(images)) + residual.astype(np.int64)
  return bits.astype(np.int32).view(np.float32)


def load(path: str | pathlib.Path = FIXTURE) -> list[tuple[np.ndarray, np.ndarray]]:
  """[(uint8 images, TF's float32 outputs)] of each stored shape."""
  with np.load(path) as f:
    return [(f[f'images_{h}x{w}'], decode(f[f'images_{h}x{w}'], f[f'residual_{h}x{w}']))
            for h, w in SHAPES]


def tf_resize(images: np.ndarray) -> np.ndarray:
  """TF1's `resize_bilinear(align_corners=False, half_pixel_centers=False)` on float32 0..255."""
  import tensorflow as tf  # noqa: PLC0415 - only where the fixture is made

  out = tf.compat.v1.image.resize_bilinear(images.astype(np.float32), (SIZE, SIZE),
                                           align_corners=False, half_pixel_centers=False)
  return np.asarray(out, np.float32)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=str(FIXTURE))
  args = parser.parse_args()
  arrays = {}
  for name, images in make_inputs().items():
    outputs = tf_resize(images)
    residual = encode(images, outputs)
    assert np.array_equal(decode(images, residual).view(np.int32), outputs.view(np.int32))
    arrays[name], arrays['residual' + name[len('images'):]] = images, residual
    print(f'{name}: residual {residual.dtype}, |r| <= {np.abs(residual.astype(np.int64)).max()}, '
          f'nonzero {np.count_nonzero(residual)} of {residual.size}')
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(out, **arrays)
  print(f'wrote {out} ({out.stat().st_size} bytes)')


if __name__ == '__main__':
  main()
