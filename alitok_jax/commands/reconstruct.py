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

from alitok_jax import viz
from alitok_jax.commands import loading
from alitok_jax.data import image_io, synthetic
from alitok_jax.eval import image_metrics


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tok = loading.tokenizer(config.tokenizer, random=config.random_tokenizer, dtype=config.dtype,
                          seed=config.seed)
  size = tok.config.image_size
  if config.images:
    images = image_io.load_folder(config.images, size, limit=config.num_images)
  else:
    images = synthetic.pattern_images(config.num_images, size, config.seed)
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
