"""Where tokenizer training starts: random weights, or a model directory (`config.init_from`).

ALITOK_REFERENCE.md section 2: stage 2 is initialised by a non-strict load of the stage-1
checkpoint that keeps every tensor whose name and shape match (encoder, quantizer, latent tokens,
all decoder blocks); the buffer tokens (`class_embedding`, 1 -> 32 rows) and the decoder's
positional embedding (274 -> 305 rows) keep their fresh initialisation; the stage-1 prefix head
(`ffn_aux`, `conv_out_aux`) is dropped.

The same rule starts a stage-1 run from a stage-2 tokenizer (the released `AliTok.pth` is stage
2): the encoder, quantizer and decoder blocks carry over, the class token, the decoder's positions
and the prefix head start fresh. A directory of the run's own stage carries over whole. Either
way the image size, patch size, token width and codebook must be the run's: a 512-pixel run
starts from a directory that `python -m alitok_jax.convert SRC DST --image-size=512` wrote
(issue 16; the paper's Table 5 fine-tunes from 256 weights that way).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from alitok_jax import checkpoint, tree_util
from alitok_jax.errors import ConfigError
from alitok_jax.models import build
from alitok_jax.models.variants import TokenizerConfig


def carry_matching(source: dict, fresh: dict) -> tuple[dict, list[str], list[str]]:
  """(params, names kept fresh, source names dropped): every tensor of `fresh` whose name and
  shape `source` has comes from `source` (the reference's stage-1 -> stage-2 rule)."""
  old = tree_util.flatten(source)
  new = tree_util.flatten(fresh)
  merged, kept_fresh = {}, []
  for path, value in new.items():
    if path in old and tuple(old[path].shape) == tuple(value.shape):
      merged[path] = old[path]
    else:
      merged[path] = value
      kept_fresh.append('.'.join(map(str, path)))
  dropped = ['.'.join(map(str, p)) for p in old if p not in new]
  return tree_util.unflatten(merged), sorted(kept_fresh), sorted(dropped)


_SIZES = ('image_size', 'patch_size', 'token_size', 'codebook_size')


def check_sizes(source: TokenizerConfig, run: TokenizerConfig, where: str) -> None:
  """ConfigError unless the tokenizer in `where` has the run's image, patch, token and codebook
  sizes (the matching rule would silently re-initialise what differs)."""
  differ = [f'{k} {getattr(source, k)} (the run: {getattr(run, k)})' for k in _SIZES
            if getattr(source, k) != getattr(run, k)]
  if not differ:
    return
  hint = ''
  if source.image_size != run.image_size:
    hint = (f'; convert it first: python -m alitok_jax.convert {where} NEW_DIR '
            f'--image-size={run.image_size}, or run at res={source.image_size}')
  elif source.codebook_size != run.codebook_size:
    hint = f'; run at codebook={source.codebook_size}'
  raise ConfigError(f'init_from {where} holds a tokenizer of another size: {", ".join(differ)}'
                    f'{hint}')


def initial_params(tok_cfg: TokenizerConfig, config: Any,
                   log: Callable[[str], None] = print) -> dict | None:
  """Params to start from, or None for a random initialisation inside the jitted init."""
  if not config.init_from:
    if config.stage == 2 and not config.model.startswith('tiny'):
      raise ConfigError('stage 2 starts from a stage-1 tokenizer: set --config.init_from to the '
                       'model directory of a stage-1 run (its W/model)')
    return None
  src_cfg, _ = checkpoint.load_config(config.init_from)
  if not isinstance(src_cfg, TokenizerConfig):
    raise ConfigError(f'{config.init_from} holds an AR model, not a tokenizer')
  check_sizes(src_cfg, tok_cfg, config.init_from)
  src = checkpoint.restore_params(config.init_from, build.abstract_params(src_cfg))
  src = jax.tree.map(np.asarray, src)
  if src_cfg.stage == tok_cfg.stage:
    build.check_params(tok_cfg, src)
    log(f'initialised from {config.init_from} (stage {src_cfg.stage}, all tensors)')
    return src
  fresh = jax.tree.map(np.asarray, build.random_params(tok_cfg, seed=config.seed))
  params, kept_fresh, dropped = carry_matching(src, fresh)
  log(f'stage {tok_cfg.stage} from stage {src_cfg.stage} {config.init_from}: re-initialised '
      f'{", ".join(kept_fresh)}; dropped {", ".join(dropped) or "nothing"}')
  return params
