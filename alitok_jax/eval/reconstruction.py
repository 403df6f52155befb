"""rFID, PSNR, SSIM and LPIPS of a tokenizer's reconstructions, batch by batch on a 'data' mesh.

Every image (uint8, already centre-cropped to the tokenizer's size) is encoded, decoded and the
reconstruction rounded to uint8 as a saved image would be. Then, per image and on the device:
Inception features of original and reconstruction (preprocessed as `preprocess` says: 'adm', the
ADM evaluator's, by default), squared error (PSNR), SSIM (11x11 Gaussian)
and LPIPS (VGG16 v0.1, when its params are given). rFID is the Frechet distance between the
features of the originals and of their reconstructions (the 50,000 ImageNet val images for the
reported figure: ALITOK_REFERENCE.md section 4, rFID 0.86, PSNR 20.97, SSIM 0.661, LPIPS 0.157).
One jitted step does all of it; with several processes each reads only its rows of each global
batch (`parallel.mesh.local_rows`). The `rfid` command (`commands/rfid.py`) wraps it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from alitok_jax.eval import fid as fid_lib
from alitok_jax.eval import image_metrics
from alitok_jax.eval.features import apply_inception, check_preprocess
from alitok_jax.progress import Progress
from alitok_jax.losses import lpips as lpips_loss
from alitok_jax.models import build
from alitok_jax.parallel.mesh import DATA, data_mesh, local_rows, pad_rows, round_up


def _make_step(tok_graphdef, inc_graphdef, with_lpips: bool, preprocess: str):
  def step(tok_params, inc_params, lpips_params, images):
    with jax.default_matmul_precision('float32'):
      x = images.astype(jnp.float32) / 255.0
      recon, _, q = nnx.merge(tok_graphdef, dict(tok_params))(x)
      recon = jnp.clip(jnp.round(recon * 255.0), 0, 255).astype(jnp.uint8)  # as saved
      r = recon.astype(jnp.float32) / 255.0
      feats = apply_inception(inc_graphdef, inc_params, jnp.concatenate([images, recon]),
                              preprocess)
      out = {'pool': feats.pool, 'spatial': feats.spatial, 'codes': q.codes,
             'mse': jnp.mean((x - r) ** 2, axis=(1, 2, 3)), 'ssim': image_metrics.ssim(x, r)}
      if with_lpips:
        out['lpips'] = lpips_loss.lpips_distance(lpips_params, x, r)
    return out

  return step


class ReconstructionEvaluator:
  """The jitted reconstruction-and-metrics step over a 'data' mesh of every device.

  tokenizer: an object with `config`, `graphdef` and `params` (the API's Tokenizer).
  preprocess: the Inception's preprocessing, 'adm' or 'pytorch_fid' (`models/inception.py`).
  """

  def __init__(self, tokenizer: Any, inception_config: Any, inception_params: Any,
               lpips_params: Any = None, *, batch_size: int = 64, preprocess: str = 'adm'):
    self.tokenizer = tokenizer
    self.preprocess = check_preprocess(preprocess, 'preprocess')
    self.mesh = data_mesh()
    self.batch_size = round_up(max(batch_size, 1), self.mesh.size)
    repl, self._data = NamedSharding(self.mesh, P()), NamedSharding(self.mesh, P(DATA))
    self._step = jax.jit(_make_step(tokenizer.graphdef, build.abstract(inception_config)[0],
                                    lpips_params is not None, self.preprocess),
                         in_shardings=(repl, repl, repl, self._data), out_shardings=repl)
    self._params = jax.device_put((dict(tokenizer.params), dict(inception_params), lpips_params),
                                  repl)

  def run(self, source: Any, num_images: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(per-image outputs of the first `num_images` of `source`, codebook usage counts).

    source: `read(a, b)` -> uint8 [b - a, S, S, 3] (`eval/image_source.py`). Outputs:
    pool_orig / pool_recon [N, 2048], spatial_orig / spatial_recon, codes, mse, ssim (, lpips).
    """
    size = self.tokenizer.config.image_size
    batch, n = self.batch_size, num_images
    per_process = batch // jax.process_count()
    progress = Progress('reconstructions', n)
    outs: dict[str, list[np.ndarray]] = {}
    usage = np.zeros(self.tokenizer.config.codebook_size, np.int64)
    for b0 in range(0, n, batch):
      a, b = local_rows(b0, batch, n)
      local = source.read(a, b) if b > a else np.zeros((0, size, size, 3), np.uint8)
      x = jax.make_array_from_process_local_data(self._data, pad_rows(local, per_process),
                                                 (batch, size, size, 3))
      result = jax.tree.map(np.asarray, self._step(*self._params, x))
      keep = min(batch, n - b0)
      pool, spatial = result.pop('pool'), result.pop('spatial')  # [2 * batch]: originals, recon
      result.update(pool_orig=pool[:keep], pool_recon=pool[batch:batch + keep],
                    spatial_orig=spatial[:keep], spatial_recon=spatial[batch:batch + keep])
      for name, value in result.items():
        outs.setdefault(name, []).append(value[:keep])
      usage += np.bincount(result['codes'][:keep].ravel(), minlength=len(usage))
      progress.update(keep)
    return {k: np.concatenate(v) for k, v in outs.items()}, usage


def reconstruction_metrics(outputs: dict[str, np.ndarray], usage: np.ndarray, *,
                           fid_method: str) -> dict[str, float]:
  """rfid, psnr, ssim, codebook_usage (the share of codes used) and lpips when measured."""
  mu, sigma = fid_lib.statistics(outputs['pool_orig'])
  results = {
      'rfid': fid_lib.frechet_distance_to(outputs['pool_recon'], mu, sigma, method=fid_method),
      'psnr': float(np.mean(image_metrics.psnr_from_mse(outputs['mse']))),
      'ssim': float(np.mean(outputs['ssim'])),
      'num_images': int(len(outputs['mse'])),
      'codebook_usage': float(np.mean(usage > 0)),
  }
  if 'lpips' in outputs:
    results['lpips'] = float(np.mean(outputs['lpips']))
  return results
