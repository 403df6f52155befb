"""A checkpoint at another image size: the 256 tokenizer -> the 512 starting point (issue 16).

The paper's Table 5: "Both the tokenizer and autoregressive model are fine-tuned from
pre-trained weights at 256 resolution, where the embedding of tokenizer is linearly interpolated
to match the shape." Here, for a tokenizer going from a g x g grid to G x G (16 -> 32 at 512):

- the encoder's patch positions `encoder.positional_embedding` [g^2, D] are a g x g image of
  D channels, resized to G x G bilinearly with align_corners=False semantics (pixel centres at
  (i + 0.5) / g; `jax.image.resize(..., 'linear')`, torch's
  `F.interpolate(..., mode='bilinear', align_corners=False)`);
- the latent tokens and their positional embeddings (`latent_tokens`,
  `encoder.latent_token_positional_embedding` [(1 + g) + g^2, D] and the decoder's
  `decoder.latent_token_positional_embedding` [buffers + (1 + g) + g^2, D]) split into their
  parts: the buffer rows (the decoder's class or buffer tokens) are copied, the prefix rows
  (1 + g: the top-left patch, then the first patch row) are resized linearly in 1D to 1 + G,
  and the grid rows are resized in 2D like the patch positions;
- every other tensor (the transformer blocks, the patch embedding, the codebook, the heads, the
  codebook usage) does not depend on the image size and is copied.

An AR model has no tensor that depends on the image size (RoPE is computed from the sequence),
so only its config changes: `image_seq_len` 273 -> 1,057 and 17 -> 33 prefix tokens at 512.
The interpolation runs in float32 on the host's CPU and is deterministic.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from alitok_jax import tree_util
from alitok_jax.convert.engine import ConversionError
from alitok_jax.models import variants
from alitok_jax.models.variants import ARConfig, TokenizerConfig

METHOD = "linear (bilinear on the grid), align_corners=False: jax.image.resize(..., 'linear')"

# The tokenizer's tensors that depend on the image size: (path, the buffer rows it leads with).
_BUFFER_ROWS = {
    ('latent_tokens',): lambda cfg: 0,
    ('encoder', 'latent_token_positional_embedding'): lambda cfg: 0,
    ('decoder', 'latent_token_positional_embedding'): lambda cfg: cfg.buffer_tokens,
}
_PATCH_POSITIONS = ('encoder', 'positional_embedding')


def _cpu(x: np.ndarray) -> jax.Array:
  return jax.device_put(jnp.asarray(x, jnp.float32), jax.devices('cpu')[0])


def interpolate_1d(x: np.ndarray, length: int) -> np.ndarray:
  """Rows x [n, D] resized linearly to [length, D] (align_corners=False), float32."""
  x = np.asarray(x, np.float32)
  return np.asarray(jax.image.resize(_cpu(x), (length, x.shape[1]), 'linear'), np.float32)


def interpolate_grid(x: np.ndarray, grid: int) -> np.ndarray:
  """Row-major grid rows x [g * g, D] resized bilinearly to [grid * grid, D]
  (align_corners=False), float32."""
  x = np.asarray(x, np.float32)
  g = int(round(x.shape[0] ** 0.5))
  if g * g != x.shape[0]:
    raise ConversionError(f'{x.shape[0]} rows do not form a square grid')
  image = _cpu(x.reshape(g, g, x.shape[1]))
  out = jax.image.resize(image, (grid, grid, x.shape[1]), 'linear')
  return np.asarray(out, np.float32).reshape(grid * grid, x.shape[1])


def resized_config(cfg: Any, image_size: int) -> Any:
  """The config of `cfg` at `image_size` (a tokenizer or an AR model), every size derived."""
  if isinstance(cfg, TokenizerConfig):
    if image_size % cfg.patch_size:
      raise ConversionError(f'--image-size={image_size} is not a multiple of the tokenizer\'s '
                            f'{cfg.patch_size}-pixel patches')
  elif not isinstance(cfg, ARConfig):
    raise ConversionError(f'--image-size applies to AliTok tokenizers and AR models, not to '
                          f'{type(cfg).__name__}')
  try:
    return variants.sized(cfg, image_size=image_size)
  except ValueError as exc:
    raise ConversionError(f'--image-size={image_size}: {exc}') from None


def _latent_rows(x: np.ndarray, buffers: int, old: TokenizerConfig,
                 new: TokenizerConfig) -> np.ndarray:
  """[buffers + prefix + grid, D] at the old sizes -> the same layout at the new ones."""
  if x.shape[0] != buffers + old.num_latent_tokens:
    raise ConversionError(f'{x.shape[0]} rows, expected {buffers} + {old.num_latent_tokens}')
  head = x[:buffers]
  prefix = x[buffers:buffers + old.prefix_tokens]
  grid = x[buffers + old.prefix_tokens:]
  return np.concatenate([np.asarray(head, np.float32),
                         interpolate_1d(prefix, new.prefix_tokens),
                         interpolate_grid(grid, new.grid_size)]).astype(np.float32)


def resize_tokenizer_params(cfg: TokenizerConfig, params: Mapping[str, Any], image_size: int
                            ) -> tuple[TokenizerConfig, dict, list[str]]:
  """(config, params, names interpolated) of a tokenizer at `image_size`; the rest copied."""
  new = resized_config(cfg, image_size)
  flat = tree_util.flatten(params)
  out, changed = {}, []
  for path, value in flat.items():
    path_t = tuple(map(str, path))
    if path_t in _BUFFER_ROWS:
      out[path] = _latent_rows(np.asarray(value), _BUFFER_ROWS[path_t](cfg), cfg, new)
      changed.append('.'.join(path_t))
    elif path_t == _PATCH_POSITIONS:
      out[path] = interpolate_grid(np.asarray(value), new.grid_size)
      changed.append('.'.join(path_t))
    else:
      out[path] = np.asarray(value)
  expected = {'.'.join(p) for p in (*_BUFFER_ROWS, _PATCH_POSITIONS)}
  if set(changed) != expected:
    raise ConversionError(f'the tokenizer lacks {sorted(expected - set(changed))}: not an '
                          'AliTok tokenizer this converter knows')
  return new, tree_util.unflatten(out), sorted(changed)


def resize(cfg: Any, params: Mapping[str, Any], image_size: int) -> tuple[Any, Any, list[str]]:
  """(config, params, names interpolated) of any AliTok model at `image_size`."""
  if isinstance(cfg, TokenizerConfig):
    return resize_tokenizer_params(cfg, params, image_size)
  return resized_config(cfg, image_size), params, []


def describe(old: Any, new: Any, changed: list[str]) -> str:
  """One line for the conversion report: what changed size and how."""
  if isinstance(new, ARConfig):
    return (f'{old.image_seq_len} -> {new.image_seq_len} codes; no tensor changes (RoPE is '
            'computed from the sequence): only the config is rewritten')
  return (f'{old.image_size} -> {new.image_size} pixels, {old.num_latent_tokens} -> '
          f'{new.num_latent_tokens} codes; interpolated {", ".join(changed)} ({METHOD}); every '
          'other tensor copied')


def metadata(old: Any, method: str = METHOD) -> dict[str, Any]:
  """What config.json records of a resize: the source sizes and the method."""
  if isinstance(old, ARConfig):
    return {'resized_from': {'image_seq_len': old.image_seq_len, 'method': 'config only'}}
  return {'resized_from': {'image_size': old.image_size,
                           'num_latent_tokens': old.num_latent_tokens, 'method': method}}
