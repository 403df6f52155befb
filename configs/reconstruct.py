"""Reconstruct images through a tokenizer and report PSNR (a check of converted weights).

  python -m alitok_jax.main --config=configs/reconstruct.py --workdir=out \
      --config.tokenizer=weights/tokenizer --config.images=photos/
  python -m alitok_jax.main --config=configs/reconstruct.py:tiny --workdir=out   # CPU smoke run
"""

import ml_collections

from alitok_jax import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant, _ = config_args.parse(arg, 'configs/reconstruct.py', variants=('default', 'tiny'),
                                 default='default')
  c = ml_collections.ConfigDict()
  c.mode = 'reconstruct'
  c.tokenizer = ''  # a model directory from `python -m alitok_jax.convert AliTok.pth DIR`
  c.random_tokenizer = 'stage2'  # used when no tokenizer directory is given
  c.images = ''  # a folder of images (searched recursively); empty: built-in test patterns
  c.num_images = 16
  c.batch_size = 8
  c.dtype = 'float32'  # compute dtype: float32 or bfloat16
  c.seed = 0
  if variant == 'tiny':
    c.random_tokenizer = 'tiny_stage2'
    c.num_images = 4
    c.batch_size = 2
  return c
