"""Sample class-balanced images for FID: the `sample` mode.

  python -m alitok_jax.main --config=configs/sample.py:XL --workdir=workdirs/sample_xl \
      --config.generator=weights/ar_xl --config.tokenizer=weights/tokenizer
  python -m alitok_jax.main --config=configs/sample.py:tiny --workdir=out   # CPU smoke run

Variants B / L / XL carry the released sampling settings (`models/variants.py:RELEASED_GUIDANCE`,
ALITOK_REFERENCE.md section 3: B g=16.0 p=1.8, L g=6.0 p=0.7, XL g=13.0 p=1.4, temperature 1.0)
and the reference's FID protocol: 50,000 images, 50 per class. `tiny` samples 8 images with random
tiny models on a CPU in seconds. Config arguments: images=N (e.g. `configs/sample.py:XL,
images=10000` for a quicker FID-10k; class-balanced when N is a multiple of 1000), batch=N
(images per batch on each process), res=N and codebook=N: the sizes the models must have (256
and 4096, the released; `configs/sample.py:L,res=512` samples 1,057 codes per 512 image). The
model directories carry their own sizes; these check them, and size the random `tiny` models.
"""

import ml_collections

from alitok_jax import config_args
from alitok_jax.models.variants import RELEASED_GUIDANCE

TINY_GUIDANCE = (4.0, 1.4)  # the tiny variant's (random models: not a released setting)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant, args = config_args.parse(arg, 'configs/sample.py', variants=('B', 'L', 'XL', 'tiny'),
                                    default='B', images=int, batch=int,
                                    **config_args.SIZE_SETTINGS)
  c = ml_collections.ConfigDict()
  c.mode = 'sample'
  c.variant = variant  # which released AR size the settings are for
  config_args.set_sizes(c, args, 'configs/sample.py')  # c.image_size, c.codebook_size
  # Model directories written by `python -m alitok_jax.convert` (or a trainer's export). Empty
  # strings are allowed only for `tiny`, which then uses random tiny models.
  c.generator = ''
  c.tokenizer = ''
  c.num_images = 50000  # class-balanced: image i has class i % 1000 (the reference's order)
  c.batch_size = 64  # images per batch on each process, split over its local devices
  c.guidance_scale, c.guidance_pow = RELEASED_GUIDANCE.get(variant, TINY_GUIDANCE)
  c.temperature = 1.0
  c.top_k = 0  # 0: no top-k (the reference)
  c.top_p = 1.0  # 1.0: no top-p (the reference)
  # More logit filters, applied after temperature / top-k / top-p, by name (any filter of
  # alitok_jax/sample/strategies.py), e.g. 'min_p=0.05'; '' for none (the reference).
  c.filters = ''
  c.seed = 0  # image i draws from (seed, i): the same images whatever the devices or hosts
  c.dtype = 'bfloat16'  # compute dtype of both models: bfloat16 or float32
  c.write_pngs = True  # also write images/000000.png ... (the reference's layout)
  c.preview_images = 64  # how many of the first images go into preview.png
  c.segments = 8  # decode-loop shape, speed only (see alitok_jax/sample/sampler.py)
  c.attention = 'einsum'  # 'einsum' or 'reduce', speed only
  if variant == 'tiny':
    c.num_images = 8
    c.batch_size = 4
    c.dtype = 'float32'
    c.preview_images = 8
  if args.images is not None:
    c.num_images = args.images
  if args.batch is not None:
    c.batch_size = args.batch
  return c
