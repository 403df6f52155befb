"""Builds models from their configs: concrete (random init), abstract (shapes only), or merged
with given parameters. The one place that maps a config type to its module class.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from alitok_jax import tree_util
from alitok_jax.models.ar import ARTransformer
from alitok_jax.models.convnext import ConvNeXt, ConvNeXtConfig
from alitok_jax.models.discriminator import Discriminator, DiscriminatorConfig
from alitok_jax.models.inception import InceptionConfig, InceptionV3
from alitok_jax.models.lpips import LPIPS, LPIPSConfig
from alitok_jax.models.tokenizer import AliTokTokenizer
from alitok_jax.models.variants import ARConfig, TokenizerConfig

Config = TokenizerConfig | ARConfig


def _module_class(config: Config):
  if isinstance(config, TokenizerConfig):
    return AliTokTokenizer
  if isinstance(config, ARConfig):
    return ARTransformer
  if isinstance(config, ConvNeXtConfig):
    return ConvNeXt
  if isinstance(config, DiscriminatorConfig):
    return Discriminator
  if isinstance(config, InceptionConfig):
    return InceptionV3
  if isinstance(config, LPIPSConfig):
    return LPIPS
  raise TypeError(f'not a model config: {type(config).__name__}')


def create(config: Config, *, seed: int = 0, dtype=jnp.float32) -> nnx.Module:
  """A randomly initialised model (the reference's initialisation)."""
  return _module_class(config)(config, dtype=dtype, rngs=nnx.Rngs(seed))


def abstract(config: Config, *, dtype=jnp.float32) -> tuple[nnx.GraphDef, nnx.State]:
  """(graphdef, state of ShapeDtypeStructs): the model's structure without allocating it."""
  model = nnx.eval_shape(lambda: create(config, dtype=dtype))
  return nnx.split(model)


def abstract_params(config: Config) -> dict[str, Any]:
  """The parameter tree as a pure nested dict of ShapeDtypeStructs."""
  return nnx.to_pure_dict(abstract(config)[1])


def check_params(config: Config, params: Mapping[str, Any]) -> None:
  """Raises ValueError naming every missing, unexpected or mis-shaped parameter."""
  problem = tree_util.shape_mismatches(abstract_params(config), params)
  if problem:
    raise ValueError(f'parameters do not match the model config: {problem}')


def random_params(config: Config, *, seed: int = 0) -> dict[str, Any]:
  """Freshly initialised parameters as a pure nested dict."""
  return nnx.to_pure_dict(nnx.split(create(config, seed=seed))[1])


@functools.lru_cache(maxsize=64)
def count_params(config: Config) -> int:
  """Parameters of a model config (cached: building the abstract tree of a large model takes
  seconds, and the estimates and benchmarks ask often)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params(config)))
