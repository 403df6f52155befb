"""Loading the models a command's config names, through the API, or random ones for smoke runs.

One place for what several commands do alike: a tokenizer directory, or a random tokenizer of a
`variants.TOKENIZER` size when the config asks for one (tests, CPU smoke runs); the FID
Inception and LPIPS directories, or random ones. Random weights are announced on stderr, since
every number they give is meaningless.
"""

from __future__ import annotations

from typing import Any

from alitok_jax import Tokenizer
from alitok_jax.errors import ConfigError
from alitok_jax.eval import features
from alitok_jax.progress import note, warn
from alitok_jax.losses import lpips as lpips_loss
from alitok_jax.models import variants

TOKENIZER_HOW_TO = ('a tokenizer model directory (from `python -m alitok_jax.convert AliTok.pth '
                    "weights/tokenizer` or a trainer's W/model)")


def check_sizes(model_config: Any, config: Any, where: str) -> None:
  """ConfigError unless a loaded model has the run config's `image_size` (a tokenizer) and
  `codebook_size` (the `res` / `codebook` config arguments; absent or 0: not checked)."""
  want = {'image_size': config.get('image_size', 0), 'codebook_size': config.get('codebook_size', 0)}
  arg = {'image_size': 'res', 'codebook_size': 'codebook'}
  for key, value in want.items():
    have = getattr(model_config, key, None)
    if value and have is not None and have != value:
      raise ConfigError(f'{where} holds a model with {key} {have}, but the config asks for '
                        f'{value}: add {arg[key]}={have} to the config argument (or give a '
                        f'model of {key} {value})')


def tokenizer(directory: str, *, random: str = '', dtype: Any = 'float32', seed: int = 0,
              sizes: Any = None) -> Tokenizer:
  """The tokenizer of `directory`, or a random `random` one (a variants.TOKENIZER key).

  sizes: the run config, whose image_size / codebook_size the tokenizer must have (a random one
  is built at them).
  """
  if directory:
    tok = Tokenizer.load(directory, dtype=dtype)
    if sizes is not None:
      check_sizes(tok.config, sizes, directory)
    return tok
  if random:
    if random not in variants.TOKENIZER:
      raise ConfigError(f'config.random_tokenizer={random!r} is not one of '
                        f'{sorted(variants.TOKENIZER)}')
    cfg = variants.TOKENIZER[random]
    if sizes is not None:
      cfg = variants.sized_from_config(cfg, sizes)
    warn(f'no config.tokenizer: a RANDOM {random} tokenizer at {cfg.image_size} pixels, '
         f'{cfg.num_latent_tokens} codes (smoke tests only)')
    return Tokenizer.random(cfg, seed=seed, dtype=dtype)
  raise ConfigError(f'config.tokenizer is not set: it must name {TOKENIZER_HOW_TO}')


def inception(directory: str, *, random: bool = False, seed: int = 0):
  """(config, params) of the FID Inception in `directory`, or a random-weight one."""
  if directory:
    return features.load_inception(directory)
  if random:
    warn('config.random_inception: a RANDOM-WEIGHT Inception; every number below is '
         'meaningless (smoke test only)')
    return features.random_inception(seed)
  raise ConfigError(f'config.inception is not set: it must name the FID Inception model '
                    f'directory; {features.HOW_TO}')


def lpips(directory: str, *, random: bool = False, seed: int = 0):
  """The LPIPS params of `directory`, a random-weight LPIPS, or None (LPIPS skipped)."""
  if directory:
    return lpips_loss.load_params(directory)
  if random:
    warn('config.random_lpips: a RANDOM-WEIGHT LPIPS (smoke test)')
    return lpips_loss.random_params(seed)
  note('config.lpips is empty: LPIPS skipped')
  return None
