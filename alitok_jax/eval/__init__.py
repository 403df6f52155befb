"""Evaluation (docs/EVALUATION.md): the FID Inception's features (`features`), FID / IS /
precision-recall (`fid`, `inception_score`, `precision_recall`), what the ADM evaluator reports of
a sample batch (`generation`), a tokenizer's rFID / PSNR / SSIM / LPIPS (`reconstruction`), the
ADM npz format (`reference_batch`), PSNR / SSIM (`image_metrics`) and the image sources of
rFID (`image_source`). The `fid`, `rfid` and `reconstruct` modes are in `alitok_jax/commands/`.

`inception_features(model_dir, images, preprocess='adm')` -> {'pool', 'spatial'[, 'logits']} is
`features.inception_features`, imported on first use (so that the numpy-only modules stay light).
"""

from __future__ import annotations

__all__ = ['inception_features']


def __getattr__(name: str):
  if name == 'inception_features':
    from alitok_jax.eval.features import inception_features  # noqa: PLC0415

    return inception_features
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
