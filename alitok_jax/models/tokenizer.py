"""The AliTok tokenizer: bidirectional ViT encoder, float32 quantiser, stage-1 / stage-2 decoders.

ALITOK_REFERENCE.md sections 1 and 2 (`modeling/alitok.py`, `train_tokenizer/model/vae_stage1.py`,
`vae_stage2.py`). Images are NHWC float in [0, 1] here (the reference is NCHW; no mean/std
normalisation in either); decoder outputs pass through a sigmoid.

- Encoder: 16x16 patches in raster order (token = row * 16 + col) + positions, then the 273 learned
  latent tokens + their positions; pre-LN ViT over [256 patches, 273 latents]; the last 273 tokens
  -> `ln_post` -> linear to the 32-wide code space.
- Decoder: code vectors -> `decoder_embed`; prepend the learned buffer tokens (`class_embedding`:
  1 class token in stage 1, 32 buffer tokens in stage 2) and add positions; ViT (causal in stage 1,
  bidirectional in stage 2); the last 256 tokens -> `ln_post` -> per-token linear to a 16x16x3
  patch whose channels are ordered (p1 row, p2 column, c colour) -> pixels -> 1x1 `conv_out` ->
  sigmoid. Stage 1 also maps the 17 prefix tokens through `ffn_aux` / `conv_out_aux` to one row of
  17 patches, [B, 16, 272, 3]: the prefix head.

Sizes are those of 256-pixel images; every one follows the config (`variants.sized`): at 512,
32 x 32 patches, 33 prefix tokens and 1,057 latent tokens, the prefix head one row of 33 patches.

Dimension letters: B batch, P patches (256), L latent tokens (273), S decoder sequence, D width,
C code width, V codebook size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from alitok_jax.models import layers
from alitok_jax.models.quantizer import QuantizerOutput, VectorQuantizer
from alitok_jax.models.variants import TokenizerConfig, ViTConfig

_embedding_init = lambda width: nnx.initializers.normal(stddev=width**-0.5)  # scale * randn


def _transformer(cfg: ViTConfig, dtype, rngs: nnx.Rngs, init) -> nnx.List:
  return nnx.List([
      layers.ResidualAttentionBlock(cfg.width, cfg.heads, cfg.mlp_width, dtype=dtype, rngs=rngs,
                                    init=init)
      for _ in range(cfg.layers)
  ])


def _patches_to_pixels(x: jax.Array, patch: int, rows: int, cols: int) -> jax.Array:
  """[B, rows * cols, p1 * p2 * 3] (channels ordered p1, p2, c) -> [B, rows * p, cols * p, 3]."""
  b = x.shape[0]
  x = x.reshape(b, rows, cols, patch, patch, 3)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, rows * patch, cols * patch, 3)


class Encoder(nnx.Module):
  """images [B, 256, 256, 3] + latent tokens [L, D] -> pre-quantisation codes z [B, L, C]."""

  def __init__(self, cfg: TokenizerConfig, *, dtype, rngs: nnx.Rngs):
    w, p = cfg.encoder.width, cfg.patch_size
    kernel_init = layers.kernel_init(cfg.kernel_init)
    self.num_patches = cfg.num_patches
    self.patch_embed = nnx.Conv(3, w, kernel_size=(p, p), strides=(p, p), padding='VALID',
                                dtype=dtype, kernel_init=kernel_init,
                                bias_init=layers.zeros_init, rngs=rngs)
    init = _embedding_init(w)
    self.positional_embedding = nnx.Param(init(rngs.params(), (cfg.num_patches, w)))
    self.latent_token_positional_embedding = nnx.Param(
        init(rngs.params(), (cfg.num_latent_tokens, w)))
    self.ln_pre = layers.layer_norm(w, rngs, dtype)
    self.transformer = _transformer(cfg.encoder, dtype, rngs, kernel_init)
    self.ln_post = layers.layer_norm(w, rngs, dtype)
    self.conv_out = nnx.Linear(w, cfg.token_size, dtype=dtype, kernel_init=kernel_init,
                               bias_init=layers.zeros_init, rngs=rngs)  # a 1x1 conv

  def __call__(self, images: jax.Array, latent_tokens: jax.Array) -> jax.Array:
    b = images.shape[0]
    x = self.patch_embed(images)  # [B, 16, 16, D]
    x = x.reshape(b, -1, x.shape[-1]) + self.positional_embedding[...].astype(x.dtype)  # [B, P, D]
    lat = latent_tokens + self.latent_token_positional_embedding[...]  # [L, D]
    lat = jnp.broadcast_to(lat.astype(x.dtype), (b, *lat.shape))
    x = self.ln_pre(jnp.concatenate([x, lat], axis=1))  # [B, P + L, D]
    for block in self.transformer:
      x = block(x)
    return self.conv_out(self.ln_post(x[:, self.num_patches:]))  # [B, L, C]


class Decoder(nnx.Module):
  """Code vectors [B, L, C] -> (images [B, 256, 256, 3], prefix [B, 16, 272, 3] or None)."""

  def __init__(self, cfg: TokenizerConfig, *, dtype, rngs: nnx.Rngs):
    w, p = cfg.decoder.width, cfg.patch_size
    self.causal = cfg.causal_decoder
    self.num_buffers = cfg.buffer_tokens
    self.prefix_tokens = cfg.prefix_tokens
    self.grid_size = cfg.grid_size
    self.patch_size = p
    self.has_prefix_head = cfg.stage == 1
    kernel_init = layers.kernel_init(cfg.kernel_init)
    linear = lambda i, o: nnx.Linear(i, o, dtype=dtype, kernel_init=kernel_init,
                                     bias_init=layers.zeros_init, rngs=rngs)
    self.decoder_embed = linear(cfg.token_size, w)
    init = _embedding_init(w)
    self.class_embedding = nnx.Param(init(rngs.params(), (cfg.buffer_tokens, w)))
    self.latent_token_positional_embedding = nnx.Param(
        init(rngs.params(), (cfg.buffer_tokens + cfg.num_latent_tokens, w)))
    self.ln_pre = layers.layer_norm(w, rngs, dtype)
    self.transformer = _transformer(cfg.decoder, dtype, rngs, kernel_init)
    self.ln_post = layers.layer_norm(w, rngs, dtype)
    self.ffn = linear(w, p * p * 3)  # a 1x1 conv; channels ordered (p1, p2, c)
    self.conv_out = linear(3, 3)  # a 1x1 conv on RGB
    if self.has_prefix_head:
      self.ffn_aux = linear(w, p * p * 3)
      self.conv_out_aux = linear(3, 3)

  def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    b = z.shape[0]
    x = self.decoder_embed(z)  # [B, L, D]
    buffers = jnp.broadcast_to(self.class_embedding[...].astype(x.dtype),
                               (b, *self.class_embedding.shape))
    x = jnp.concatenate([buffers, x], axis=1)  # [B, S, D]
    x = self.ln_pre(x + self.latent_token_positional_embedding[...].astype(x.dtype))
    mask = layers.causal_mask(x.shape[1]) if self.causal else None
    for block in self.transformer:
      x = block(x, mask)
    x = self.ln_post(x[:, self.num_buffers:])  # [B, L, D]: prefix then grid tokens
    g, p = self.grid_size, self.patch_size
    pixels = _patches_to_pixels(self.ffn(x[:, self.prefix_tokens:]), p, g, g)
    images = jax.nn.sigmoid(self.conv_out(pixels).astype(jnp.float32))
    if not self.has_prefix_head:
      return images, None
    # Prefix head: the 17 prefix tokens as one row of 17 patches.
    prefix_pixels = _patches_to_pixels(self.ffn_aux(x[:, :self.prefix_tokens]), p, 1,
                                       self.prefix_tokens)
    prefix = jax.nn.sigmoid(self.conv_out_aux(prefix_pixels).astype(jnp.float32))
    return images, prefix


class AliTokTokenizer(nnx.Module):
  """Encoder + quantiser + decoder. Parameter tree mirrors the reference's state dict."""

  def __init__(self, cfg: TokenizerConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.config = cfg
    self.latent_tokens = nnx.Param(
        _embedding_init(cfg.encoder.width)(rngs.params(), (cfg.num_latent_tokens, cfg.encoder.width)))
    self.encoder = Encoder(cfg, dtype=dtype, rngs=rngs)
    self.quantize = VectorQuantizer(cfg.codebook_size, cfg.token_size, cfg.commitment_cost,
                                    rngs=rngs)
    self.decoder = Decoder(cfg, dtype=dtype, rngs=rngs)

  def encode(self, images: jax.Array) -> jax.Array:
    """images [B, H, W, 3] float in [0, 1] -> pre-quantisation z [B, L, C] float32."""
    return self.encoder(images, self.latent_tokens[...]).astype(jnp.float32)

  def decode(self, quantized: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """Code vectors [B, L, C] -> (images [B, H, W, 3] float32 in [0, 1], prefix or None)."""
    return self.decoder(quantized)

  def decode_codes(self, codes: jax.Array) -> jax.Array:
    """codes [B, L] int -> images [B, H, W, 3] float32 in [0, 1]."""
    return self.decode(self.quantize.lookup(codes))[0]

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array | None, QuantizerOutput]:
    """The training forward: (reconstruction, prefix reconstruction or None, quantiser output)."""
    q = self.quantize(self.encode(images))
    recon, prefix = self.decode(q.quantized)
    return recon, prefix, q


def prefix_target(images: jax.Array, patch_size: int = 16) -> jax.Array:
  """What the stage-1 prefix head reconstructs: the top-left patch then the first patch row.

  images [B, H, W, 3] -> [B, p, p + W, 3] (16 x 272 for 256-pixel images).
  """
  top = images[:, :patch_size]
  return jnp.concatenate([top[:, :, :patch_size], top], axis=2)
