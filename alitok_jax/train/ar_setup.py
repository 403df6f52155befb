"""The AR trainer's pieces around its loop: the model config, the optimizer, the initial state,
the held-out evaluation and the sample grids (the loop is `commands/train_ar.py`).

ALITOK_REFERENCE.md section 3 (configs/alitok_*.yaml): AdamW (0.9, 0.96), weight decay on
matrices only, warm-up then cosine to `end_lr`, clipping; dropouts from the variant unless the
config overrides them. The step itself is `ar_steps.py`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alitok_jax import viz
from alitok_jax.errors import ConfigError
from alitok_jax.models import build, functional, variants
from alitok_jax.parallel import mesh as mesh_lib
from alitok_jax.sample import sampler as sampler_lib
from alitok_jax.sample.cfg import Guidance
from alitok_jax.sample.strategies import Sampling
from alitok_jax.train import ar_steps, loop, nonfinite, optim

_DROPOUTS = ('dropout', 'attn_dropout', 'token_dropout', 'class_dropout')


def model_config(config: Any) -> variants.ARConfig:
  """The AR size `config.model` at `config.image_size` / `config.codebook_size` (0 or absent
  keeps the variant's), with the config's dropout overrides (None keeps the variant's)."""
  if config.model not in variants.AR:
    raise ConfigError(f'config.model={config.model!r} is not one of {sorted(variants.AR)}')
  base = variants.sized_from_config(variants.AR[config.model], config)
  overrides = {k: config.get(k) for k in _DROPOUTS if config.get(k) is not None}
  return variants.ARConfig(**{**base.__dict__, **overrides})


def optimizer(config: Any, cfg: variants.ARConfig) -> tuple[Callable, optax.GradientTransformation]:
  """(learning-rate schedule, AdamW with decay on matrices only) of `config.optim`."""
  o = config.optim
  schedule = optim.warmup_cosine(o.lr, o.warmup_steps, o.total_steps, o.end_lr)
  tx = optim.adamw(b1=o.b1, b2=o.b2, weight_decay=o.weight_decay, grad_clip=o.grad_clip,
                   decay_mask=optim.decay_mask_matrices(build.abstract_params(cfg)))
  return schedule, tx


def init_fn(cfg: variants.ARConfig, tx: optax.GradientTransformation) -> Callable[..., dict]:
  """(seed, params or None) -> the fresh train state {'step', 'params', 'opt', 'nonfinite'}: the
  given params (a fine-tune, `initial_params`) or random ones; jit it with out_shardings."""

  def init(seed: int, params: Any = None) -> dict:
    if params is None:
      params = build.random_params(cfg, seed=seed)
    return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt': tx.init(params),
            nonfinite.COUNTERS: nonfinite.initial_counters()}

  return init


def initial_params(cfg: variants.ARConfig, config: Any,
                   log: Callable[[str], None] = print) -> Any:
  """The params of `config.init_from` (an AR model directory) as numpy, or None (random).

  A fine-tune starts there with a fresh optimizer (the paper's 512 AR models start from their
  256 weights, Table 5). The weights do not depend on the sequence length (RoPE is computed), so
  a 273-code model starts a 1,057-code run as it is; every other size must be the run's.
  """
  if not config.get('init_from'):
    return None
  from alitok_jax import checkpoint  # pylint: disable=import-outside-toplevel

  src_cfg, _ = checkpoint.load_config(config.init_from)
  if not isinstance(src_cfg, variants.ARConfig):
    raise ConfigError(f'init_from {config.init_from} holds a tokenizer, not an AR model')
  shape_fields = ('width', 'depth', 'heads', 'codebook_size', 'num_classes')
  differ = [f'{k} {getattr(src_cfg, k)} (the run: {getattr(cfg, k)})' for k in shape_fields
            if getattr(src_cfg, k) != getattr(cfg, k)]
  if differ:
    raise ConfigError(f'init_from {config.init_from} holds an AR model of another size: '
                      f'{", ".join(differ)}')
  params = jax.tree.map(np.asarray, checkpoint.restore_params(
      config.init_from, build.abstract_params(src_cfg)))
  note = ''
  if src_cfg.image_seq_len != cfg.image_seq_len:
    note = (f' (its {src_cfg.image_seq_len}-code weights serve {cfg.image_seq_len} codes as '
            'they are: RoPE is computed from the sequence, no tensor depends on it)')
  log(f'initialised from {config.init_from}, a fresh optimizer{note}')
  return params


def train_step_fn(config: Any, cfg: variants.ARConfig, graphdef: Any, schedule: Callable,
                  tx: optax.GradientTransformation, shardings: Any, mesh: Any) -> Callable:
  """The jitted train step (state, batch, key) -> (state, metrics) of a config: the state donated
  and kept in `shardings`. The trainer runs it; `python -m alitok_jax.aot` compiles it."""
  settings = ar_steps.ARStepSettings(graphdef, cfg, schedule, tx, config.accum_steps,
                                     config.remat)
  return jax.jit(functools.partial(ar_steps.train_step, settings), donate_argnums=0,
                 out_shardings=(shardings, mesh_lib.replicated(mesh)))


def evaluate(eval_fn: Callable, params: Any, held_out: dict[str, np.ndarray], mesh: Any,
             global_batch: int, local_batch: int) -> dict[str, float]:
  """Mean metrics over the whole global batches of the held-out codes (`eval/` prefixed)."""
  window = loop.MetricWindow()
  for rows, _ in loop.held_out_batches(held_out, global_batch, local_batch, keep_partial=False):
    window.add(eval_fn(params, mesh_lib.global_batch(rows, mesh)))
  return {f'eval/{k}': v for k, v in window.mean().items()}


def sample_grid(cfg: variants.ARConfig, dtype: Any, params: Any, tokenizer: Any, *,
                classes: tuple[int, ...], per_class: int, guidance_scale: float,
                guidance_pow: float, seed: int) -> np.ndarray:
  """A grid of samples, one row per class, decoded by `tokenizer` (an object with `graphdef`
  and `params`, e.g. the API's Tokenizer); uint8 [H, W, 3].

  Every process samples (the batch spreads over all devices) and gets every image.
  """
  graphdef = build.abstract(cfg, dtype=jnp.dtype(dtype))[0]
  sampler = sampler_lib.Sampler(graphdef, mesh_lib.to_host(params), cfg)
  labels = np.repeat(np.asarray(classes, np.int32), per_class)
  codes = sampler.sample(labels, Guidance.create(guidance_scale, guidance_pow, cfg.image_seq_len),
                         Sampling.create(), seed=seed)
  codes = mesh_lib.to_host(codes)
  images = np.asarray(functional.decode(tokenizer.graphdef, tokenizer.params, jnp.asarray(codes)))
  return viz.grid([images[i * per_class:(i + 1) * per_class] for i in range(len(classes))])

