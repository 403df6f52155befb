"""The one registry of data sources: a kind name and its arguments -> a grain random-access source.

    make_source('synthetic', num_classes=10, size=10000, image_size=64, seed=0)   # images
    make_source('folder', root='/data/imagenet/train')
    make_source('tfds', name='imagenet2012', split='train', data_dir='/data/tfds')
    make_source('codes', directory='codes/imagenet_train')                          # codes
    make_source('synthetic_codes', num_classes=10, size=4096, seq_len=273, codebook_size=4096)

Image sources give {'image': encoded bytes | uint8 [H, W, 3], 'label', optionally 'name'}
(`image_pipeline.image_loader` decodes and transforms them); code sources give
{'codes': int32 [L], 'label'} (`loader.Records`). Arguments are checked against the source's
signature, with an error that lists what it takes. The trainers map a config's data section onto
these (`train/train_data.py`).
"""

from __future__ import annotations

import inspect

from alitok_jax.errors import ConfigError

IMAGE_KINDS = ('synthetic', 'folder', 'tfds')
CODE_KINDS = ('codes', 'synthetic_codes')
SOURCE_KINDS = IMAGE_KINDS + CODE_KINDS


def _factories() -> dict:
  # pylint: disable=import-outside-toplevel  (tfds is slow to import; only when asked for)
  from alitok_jax.data import code_shards, folders, synthetic, tfds_source
  return {'synthetic': synthetic.SyntheticImages, 'folder': folders.ImageFolder,
          'tfds': tfds_source.tfds_source, 'codes': code_shards.CodeShards,
          'synthetic_codes': synthetic.SyntheticCodes}


def make_source(kind: str, **kwargs):
  """The source of `kind` (one of SOURCE_KINDS) built from keyword arguments."""
  factories = _factories()
  if kind not in factories:
    raise ConfigError(f'unknown data source kind {kind!r}; choose one of {SOURCE_KINDS}')
  factory = factories[kind]
  params = inspect.signature(factory).parameters
  unknown = sorted(set(kwargs) - set(params))
  missing = sorted(name for name, p in params.items()
                   if p.default is inspect.Parameter.empty and name not in kwargs
                   and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
  if unknown or missing:
    accepted = ', '.join(
        n + ('' if p.default is inspect.Parameter.empty else f'={p.default!r}')
        for n, p in params.items())
    problems = ([f'unknown arguments {unknown}'] if unknown else []) + (
        [f'missing arguments {missing}'] if missing else [])
    raise ConfigError(f'data source {kind!r}: {"; ".join(problems)}; it takes ({accepted})')
  return factory(**kwargs)
