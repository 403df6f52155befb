"""Sample class-balanced images for FID: the `sample` mode.

  python -m alitok_jax.main --config=configs/sample.py:XL --workdir=workdirs/sample_xl \
      --config.generator=weights/ar_xl --config.tokenizer=weights/tokenizer
  python -m alitok_jax.main --config=configs/sample.py:tiny --workdir=out   # CPU smoke run

Variants B / L / XL carry the released sampling settings (ALITOK_REFERENCE.md section 3: B g=16.0
p=1.8, L g=6.0 p=0.7, XL g=13.0 p=1.4, temperature 1.0) and the reference's FID protocol: 50,000
images, 50 per class. `tiny` samples 8 images with random tiny models on a CPU in seconds.
"""

import ml_collections

# variant -> (guidance scale, guidance power): the released settings.
RELEASED = {'B': (16.0, 1.8), 'L': (6.0, 0.7), 'XL': (13.0, 1.4), 'tiny': (4.0, 1.4)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'B'
  if variant not in RELEASED:
    raise ValueError(f'unknown variant {variant!r}: use configs/sample.py:B, :L, :XL or :tiny')
  c = ml_collections.ConfigDict()
  c.mode = 'sample'
  c.variant = variant  # which released AR size the settings are for
  # Model directories written by `python -m alitok_jax.convert` (or a trainer's export). Empty
  # strings are allowed only for `tiny`, which then uses random tiny models.
  c.generator = ''
  c.tokenizer = ''
  c.num_images = 50000  # class-balanced: image i has class i % 1000 (the reference's order)
  c.batch_size = 64  # images per batch on each process, split over its local devices
  c.guidance_scale, c.guidance_pow = RELEASED[variant]
  c.temperature = 1.0
  c.top_k = 0  # 0: no top-k (the reference)
  c.top_p = 1.0  # 1.0: no top-p (the reference)
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
  return c
