"""rFID / PSNR / SSIM / LPIPS of a tokenizer on an image set (ImageNet val, centre-cropped to 256).

  python -m alitok_jax.main --config=configs/rfid.py --workdir=out/rfid \
      --config.tokenizer=weights/tokenizer --config.images=imagenet/val \
      --config.inception=weights/inception --config.lpips=weights/lpips
  python -m alitok_jax.main --config=configs/rfid.py:tiny --workdir=out/rfid_tiny   # CPU smoke run

docs/EVALUATION.md: which reference serves rFID and what the released tokenizer scores.
"""

import ml_collections

from alitok_jax import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant, _ = config_args.parse(arg, 'configs/rfid.py', variants=('default', 'tiny'),
                                 default='default')
  c = ml_collections.ConfigDict()
  c.mode = 'rfid'
  c.tokenizer = ''  # model directory from `python -m alitok_jax.convert AliTok.pth DIR`
  c.random_tokenizer = ''  # smoke tests only: a variants.TOKENIZER name with random weights
  c.images = ''  # a folder of images (searched recursively), e.g. the ImageNet val set
  c.tfds = ''  # or a TFDS split 'name:split', e.g. 'imagenet2012:validation'
  c.tfds_data_dir = ''
  c.num_images = 0  # 0: all (the reported rFID uses the 50,000 ImageNet val images)
  c.inception = ''  # from `python -m alitok_jax.convert pt_inception-2015-12-05-6726825d.pth DIR`
  c.random_inception = False  # smoke tests only
  c.lpips = ''  # from `python -m alitok_jax.convert vgg16-397923af.pth vgg.pth DIR`; '' skips
  c.random_lpips = False  # smoke tests only
  c.batch_size = 64  # images per global batch (rounded up to a multiple of the device count)
  c.dtype = 'float32'  # tokenizer compute dtype: float32 or bfloat16
  c.preprocess = 'adm'  # Inception input: 'adm' (ADM's TF1 resize, (x - 128) / 128), 'pytorch_fid'
  c.fid_method = 'eigh'  # or 'sqrtm' (scipy)
  c.workers = 16  # threads decoding images
  c.write_reference = ''  # also save the originals' statistics as an ADM-format npz here
  c.tiny_images = 0  # > 0 (and no images/tfds): that many generated test-pattern images
  c.seed = 0
  if variant == 'tiny':
    c.random_tokenizer = 'tiny_stage2'
    c.random_inception = True
    c.random_lpips = True
    c.tiny_images = 4
    c.batch_size = 4
  return c
