"""Pretokenization: images -> ten-crop codes in shards (the AR trainer's data).

  python -m alitok_jax.main --config=configs/pretokenize.py --workdir=codes/imagenet_train \
      --config.tokenizer=weights/tokenizer --config.data.kind=folder \
      --config.data.root=/data/imagenet/train
  python -m alitok_jax.main --config=configs/pretokenize.py:tiny --workdir=codes/tiny   # CPU

Rerunning the same command skips the shards already written. Config arguments: res=N and
codebook=N, the sizes the tokenizer must have (256 and 4096, the released; `:res=512` for the
converted 512 tokenizer: crops of 512 pixels, 1,057 codes each); they also size the `tiny`
variant's random tokenizer.
"""

import ml_collections

from alitok_jax import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant, args = config_args.parse(arg, 'configs/pretokenize.py', variants=('default', 'tiny'),
                                    default='default', **config_args.SIZE_SETTINGS)
  c = ml_collections.ConfigDict()
  c.mode = 'pretokenize'
  config_args.set_sizes(c, args, 'configs/pretokenize.py')  # c.image_size, c.codebook_size
  c.tokenizer = ''  # a tokenizer model directory
  c.random_tokenizer = ''  # tests only: a variants.TOKENIZER key used when no tokenizer is given
  c.dtype = 'bfloat16'
  c.seed = 0
  c.data = ml_collections.ConfigDict()
  c.data.kind = 'folder'  # folder | tfds | synthetic
  c.data.root = ''
  c.data.split = 'train'
  c.data.data_dir = ''
  c.data.num_classes = 10
  c.data.size = 100_000
  c.num_images = 0  # 0 = all
  c.images_per_shard = 1000
  c.batch_size = 64  # images per encoder call (x 10 crops)
  if variant == 'tiny':
    c.random_tokenizer = 'tiny_stage2'
    c.dtype = 'float32'
    c.data.kind = 'synthetic'
    c.data.num_classes = 4
    c.data.size = 24
    c.images_per_shard = 8
    c.batch_size = 4
  return c
