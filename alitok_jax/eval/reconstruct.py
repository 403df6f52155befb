"""The `reconstruct` mode: images -> tokenizer -> codes -> images, with PSNR and a picture.

    python -m alitok_jax.main --config=configs/reconstruct.py \
        --config.tokenizer=weights/tokenizer --config.images=path/to/photos --workdir=out

A quick check that converted weights behave (the released tokenizer reconstructs ImageNet
images at about 21 dB PSNR, ALITOK_REFERENCE.md section 4). Writes into the workdir:
  reconstructions.png   pairs of rows: originals, then their reconstructions
  metrics.json          mean PSNR, per-image PSNR, codebook entries used
"""

from __future__ import annotations

import json
import pathlib
import time

import ml_collections
import numpy as np

from alitok_jax import Tokenizer, viz
from alitok_jax.data import image_io
from alitok_jax.eval import image_metrics
from alitok_jax.models import variants


def test_pattern_images(n: int, size: int, seed: int = 0) -> np.ndarray:
  """n deterministic uint8 images with smooth colour gradients and stripes (no data needed)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing='ij')
  out = []
  for _ in range(n):
    colour = rng.random((2, 3))
    freq, angle = rng.uniform(2, 8), rng.uniform(0, np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    img = colour[0] * (1 - yy[..., None]) + colour[1] * yy[..., None]
    out.append(0.7 * img + 0.3 * stripes[..., None])
  return viz.to_uint8(np.stack(out))


def _load_tokenizer(config: ml_collections.ConfigDict) -> Tokenizer:
  if config.tokenizer:
    return Tokenizer.load(config.tokenizer, dtype=config.dtype)
  if config.random_tokenizer not in variants.TOKENIZER:
    raise ValueError(f'config.random_tokenizer must be one of {sorted(variants.TOKENIZER)}')
  print(f'no config.tokenizer given: using a random {config.random_tokenizer} tokenizer')
  return Tokenizer.random(variants.TOKENIZER[config.random_tokenizer], seed=config.seed,
                          dtype=config.dtype)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tok = _load_tokenizer(config)
  size = tok.config.image_size
  if config.images:
    images = image_io.load_folder(config.images, size, limit=config.num_images)
  else:
    images = test_pattern_images(config.num_images, size, config.seed)
  print(f'reconstructing {len(images)} images of {size}x{size} in batches of {config.batch_size}')
  recons, codes, start = [], [], time.perf_counter()
  for i in range(0, len(images), config.batch_size):
    batch_codes = tok.encode(images[i:i + config.batch_size])
    recons.append(np.asarray(tok.decode(batch_codes)))
    codes.append(np.asarray(batch_codes))
    done = min(i + config.batch_size, len(images))
    print(f'  {done}/{len(images)} images, {done / (time.perf_counter() - start):.1f} images/s')
  recon, codes = np.concatenate(recons), np.concatenate(codes)
  originals = images.astype(np.float32) / 255.0
  per_image = image_metrics.psnr(originals, viz.to_uint8(recon).astype(np.float32) / 255.0)
  metrics = {
      'psnr': float(per_image.mean()),
      'psnr_per_image': [round(float(p), 3) for p in per_image],
      'codes_used': int(len(np.unique(codes))),
      'num_images': int(len(images)),
  }
  rows = []
  for i in range(0, len(images), 8):
    rows += [images[i:i + 8], recon[i:i + 8]]
  viz.save_png(workdir / 'reconstructions.png', viz.grid(rows))
  (workdir / 'metrics.json').write_text(json.dumps(metrics, indent=1) + '\n')
  print(f'PSNR {metrics["psnr"]:.2f} dB over {len(images)} images, {metrics["codes_used"]} '
        f'distinct codes; wrote {workdir / "reconstructions.png"} and {workdir / "metrics.json"}')
  return metrics
