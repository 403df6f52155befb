"""Key table between the reference's GAN discriminator and `models/discriminator.py` parameters.

The reference's `train_tokenizer/loss/discriminator.py:NLayerDiscriminator` (the criterion's
`discriminator.*` in a `criterion_state`), torch names:
  block_in.0                 conv 5x5 [C, 3, 5, 5]
  blocks.{i}.0               conv 3x3 of stage i     blocks.{i}.2   its GroupNorm
  blocks.{i}.1.kernel        the fixed blur kernel (a buffer, not a parameter: ignored)
  to_logits.0, to_logits.2   conv 1x1 and conv 5x5 -> 1
Value hooks: convs OIHW <-> HWIO; GroupNorm `weight` <-> `scale`. The names do not follow our
tree, so the table is written out; `engine.KeyTable` applies it, strictly both ways.
"""

from __future__ import annotations

import re

from alitok_jax.convert import engine
from alitok_jax.models.discriminator import DiscriminatorConfig
from alitok_jax.tree_util import Path

_BLUR_BUFFER = re.compile(r'blocks\.\d+\.1\.kernel')


def _conv(ours: Path, theirs: str) -> list[engine.Row]:
  return [engine.Row(ours + ('kernel',), f'{theirs}.weight', engine.CONV),
          engine.Row(ours + ('bias',), f'{theirs}.bias')]


def key_table(cfg: DiscriminatorConfig) -> engine.KeyTable:
  """Every parameter's row (our path, torch key, hook), in the reference's order."""
  rows = _conv(('block_in', 'conv'), 'block_in.0')
  for i in range(cfg.num_stages):
    rows += _conv(('blocks', i, 'conv', 'conv'), f'blocks.{i}.0')
    rows += [engine.Row(('blocks', i, 'norm', 'scale'), f'blocks.{i}.2.weight'),
             engine.Row(('blocks', i, 'norm', 'bias'), f'blocks.{i}.2.bias')]
  rows += _conv(('head_hidden', 'conv'), 'to_logits.0')
  rows += _conv(('head_out', 'conv'), 'to_logits.2')
  return engine.KeyTable(rows, what=f'a discriminator with {cfg.num_stages} stages',
                         ignore=lambda key: bool(_BLUR_BUFFER.fullmatch(key)))
