"""Where tokenizer training starts: random weights, or stage 2 from a stage-1 model directory.

ALITOK_REFERENCE.md section 2: stage 2 is initialised by a non-strict load of the stage-1
checkpoint that keeps every tensor whose name and shape match (encoder, quantizer, latent tokens,
all decoder blocks); the buffer tokens (`class_embedding`, 1 -> 32 rows) and the decoder's
positional embedding (274 -> 305 rows) keep their fresh initialisation; the stage-1 prefix head
(`ffn_aux`, `conv_out_aux`) is dropped.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from alitok_jax import checkpoint, tree_util
from alitok_jax.models import build
from alitok_jax.models.variants import TokenizerConfig


def stage2_from_stage1(stage1_params: dict, fresh_stage2: dict) -> tuple[dict, list[str], list[str]]:
  """(stage-2 params, names kept fresh, stage-1 names dropped): the reference's matching rule."""
  old = tree_util.flatten(stage1_params)
  new = tree_util.flatten(fresh_stage2)
  merged, fresh = {}, []
  for path, value in new.items():
    if path in old and tuple(old[path].shape) == tuple(value.shape):
      merged[path] = old[path]
    else:
      merged[path] = value
      fresh.append('.'.join(map(str, path)))
  dropped = ['.'.join(map(str, p)) for p in old if p not in new]
  return tree_util.unflatten(merged), sorted(fresh), sorted(dropped)


def initial_params(tok_cfg: TokenizerConfig, config: Any,
                   log: Callable[[str], None] = print) -> dict | None:
  """Params to start from, or None for a random initialisation inside the jitted init."""
  if not config.init_from:
    if config.stage == 2 and not config.model.startswith('tiny'):
      raise ValueError('stage 2 starts from a stage-1 tokenizer: set --config.init_from to the '
                       'model directory of a stage-1 run (its W/model)')
    return None
  src_cfg, _ = checkpoint.load_config(config.init_from)
  if not isinstance(src_cfg, TokenizerConfig):
    raise ValueError(f'{config.init_from} holds an AR model, not a tokenizer')
  src = checkpoint.restore_params(config.init_from, build.abstract_params(src_cfg))
  src = jax.tree.map(np.asarray, src)
  if src_cfg.stage == tok_cfg.stage:
    build.check_params(tok_cfg, src)
    log(f'initialised from {config.init_from} (stage {src_cfg.stage}, all tensors)')
    return src
  if (src_cfg.stage, tok_cfg.stage) != (1, 2):
    raise ValueError(f'cannot start a stage-{tok_cfg.stage} run from a stage-{src_cfg.stage} '
                     'tokenizer')
  fresh = jax.tree.map(np.asarray, build.random_params(tok_cfg, seed=config.seed))
  params, kept_fresh, dropped = stage2_from_stage1(src, fresh)
  log(f'stage 2 from stage 1 {config.init_from}: re-initialised {", ".join(kept_fresh)}; '
      f'dropped {", ".join(dropped)}')
  return params
