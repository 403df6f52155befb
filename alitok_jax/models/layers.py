"""Transformer building blocks shared by the AliTok tokenizer and AR model.

Follows the reference's modules (ALITOK_REFERENCE.md sections 1 and 3):
- `ResidualAttentionBlock`: the tokenizer's pre-LN ViT block (`modeling/alitok.py`): fused `in_proj`
  whose output splits as (3, heads, head_dim), exact-erf GELU MLP, LayerNorm eps 1e-5;
- `ARBlock`: the AR model's LlamaGen block (`modeling/ar.py`): RMSNorm in float32, fused `qkv` with
  bias, QK-norm over head_dim *before* RoPE, SwiGLU without biases, dropouts, and an optional
  KV cache passed in and returned (no hidden state).

Module attribute names mirror the reference's parameter names (`ln_1`, `attn.in_proj`, `mlp.c_fc`,
`norm1`, `attn.qkv`, `mlp.w1`, ...), which keeps the converter's key table short and the two code
bases easy to compare. Linear kernels are [in, out] (the converter transposes).

Dimension letters: B batch, L query tokens, T key tokens, D width, N heads, H head dim.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from alitok_jax.models import rope

Dtype = jnp.dtype | type

# Weight initialisers of the reference: N(0, 0.02) for linears and embeddings (the tokenizer's
# truncated normal truncates at +-2 absolute, i.e. 100 std: the same distribution), zero biases.
normal_init = nnx.initializers.normal(stddev=0.02)
zeros_init = nnx.initializers.zeros_init()

# Kernel initialisers a model config can name (`variants.KERNEL_INITS`):
# - 'reference': N(0, 0.02), the reference's, made for widths of 768-1024 (a linear layer of
#   fan-in n scales its input by ~0.02 sqrt(n): 0.6 at 1024, 0.16 at 64);
# - 'fan_in': N(0, 1 / fan_in) (LeCun), which keeps a narrow model's signal at unit scale from
#   layer to layer. At widths of 64-128 the reference's init leaves a chain of near-zero layers
#   between pixels and outputs, and a tokenizer then predicts each image's mean colour for its
#   first thousand steps; the CPU demo's models use 'fan_in'.
_KERNEL_INITIALISERS = {
    'reference': normal_init,
    'fan_in': nnx.initializers.variance_scaling(1.0, 'fan_in', 'normal'),
}


def kernel_init(name: str):
  """The initialiser of linear and convolution kernels called `name`."""
  if name not in _KERNEL_INITIALISERS:
    raise ValueError(f'unknown kernel_init {name!r}; known: {sorted(_KERNEL_INITIALISERS)}')
  return _KERNEL_INITIALISERS[name]


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; the identity when `key` is None (inference) or rate is 0."""
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def split_key(key: jax.Array | None, n: int) -> list[jax.Array | None]:
  """n independent keys, or n Nones when there is no key (deterministic)."""
  return [None] * n if key is None else list(jax.random.split(key, n))


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
           dropout_rate: float = 0.0, key: jax.Array | None = None) -> jax.Array:
  """Softmax attention with scale 1/sqrt(H), logits and softmax in float32.

  q [B, L, N, H], k and v [B, T, N, H], mask boolean broadcastable to [B, N, L, T] (True = attend)
  -> [B, L, N, H] in v's dtype.
  """
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum('blnh,btnh->bnlt', q, k, preferred_element_type=jnp.float32) * scale
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = dropout(probs, dropout_rate, key)
  return jnp.einsum('bnlt,btnh->blnh', probs.astype(v.dtype), v)


def attend_one_query(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """`attend` for one query token per sequence, written as products and sums in float32.

  q [B, 1, N, H], k and v [B, T, N, H], mask boolean [1, T] -> [B, 1, N, H] in v's dtype. Equal
  to `attend` up to float rounding; XLA turns it into reduction fusions that read k and v (or a
  static slice of them) in place, an alternative to a batched matrix-vector product for KV-cache
  decoding (which of the two is faster depends on the backend: `commands/benchmark_sample.py`
  measures).
  """
  scale = q.shape[-1] ** -0.5
  qf = q[:, 0].astype(jnp.float32)  # [B, N, H]
  logits = jnp.sum(qf[:, None] * k.astype(jnp.float32), axis=-1) * scale  # [B, T, N]
  logits = jnp.where(mask[0][None, :, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=1)
  out = jnp.sum(probs[..., None] * v.astype(jnp.float32), axis=1)  # [B, N, H]
  return out[:, None].astype(v.dtype)


def causal_mask(length: int) -> jax.Array:
  """[L, L] boolean, True where key position <= query position."""
  return jnp.tril(jnp.ones((length, length), dtype=bool))


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs, dtype: Dtype, bias: bool = True,
            init=normal_init) -> nnx.Linear:
  return nnx.Linear(d_in, d_out, use_bias=bias, dtype=dtype, kernel_init=init,
                    bias_init=zeros_init, rngs=rngs)


# ----------------------------------------------------------------------------------------------
# Tokenizer ViT block.


class ViTAttention(nnx.Module):
  """Multi-head self-attention with one fused qkv projection (`in_proj`) and `out_proj`."""

  def __init__(self, width: int, heads: int, *, dtype: Dtype, rngs: nnx.Rngs,
               init=normal_init):
    self.heads = heads
    self.in_proj = _linear(width, 3 * width, rngs, dtype, init=init)
    self.out_proj = _linear(width, width, rngs, dtype, init=init)

  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    b, l, d = x.shape
    qkv = self.in_proj(x).reshape(b, l, 3, self.heads, d // self.heads)  # [B, L, 3, N, H]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    return self.out_proj(attend(q, k, v, mask).reshape(b, l, d))


class GeluMLP(nnx.Module):
  """c_fc -> exact GELU -> c_proj."""

  def __init__(self, width: int, hidden: int, *, dtype: Dtype, rngs: nnx.Rngs,
               init=normal_init):
    self.c_fc = _linear(width, hidden, rngs, dtype, init=init)
    self.c_proj = _linear(hidden, width, rngs, dtype, init=init)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.c_proj(jax.nn.gelu(self.c_fc(x), approximate=False))


def layer_norm(width: int, rngs: nnx.Rngs, dtype: Dtype) -> nnx.LayerNorm:
  """torch.nn.LayerNorm: eps 1e-5, statistics in float32."""
  return nnx.LayerNorm(width, epsilon=1e-5, dtype=dtype, rngs=rngs)


class ResidualAttentionBlock(nnx.Module):
  """x + attn(ln_1(x)); x + mlp(ln_2(x))."""

  def __init__(self, width: int, heads: int, mlp_width: int, *, dtype: Dtype, rngs: nnx.Rngs,
               init=normal_init):
    self.ln_1 = layer_norm(width, rngs, dtype)
    self.attn = ViTAttention(width, heads, dtype=dtype, rngs=rngs, init=init)
    self.ln_2 = layer_norm(width, rngs, dtype)
    self.mlp = GeluMLP(width, mlp_width, dtype=dtype, rngs=rngs, init=init)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    x = x + self.attn(self.ln_1(x), mask)
    return x + self.mlp(self.ln_2(x))


# ----------------------------------------------------------------------------------------------
# AR block.


class RMSNorm(nnx.Module):
  """x * rsqrt(mean(x^2) + eps) in float32, cast back to x's dtype, times `weight`."""

  def __init__(self, width: int, eps: float = 1e-5):
    self.eps = eps
    self.weight = nnx.Param(jnp.ones((width,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    normed = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return normed.astype(x.dtype) * self.weight[...].astype(x.dtype)


class SwiGLU(nnx.Module):
  """w2(silu(w1 x) * w3 x), no biases."""

  def __init__(self, width: int, hidden: int, *, dtype: Dtype, rngs: nnx.Rngs):
    self.w1 = _linear(width, hidden, rngs, dtype, bias=False)
    self.w3 = _linear(width, hidden, rngs, dtype, bias=False)
    self.w2 = _linear(hidden, width, rngs, dtype, bias=False)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.w2(jax.nn.silu(self.w1(x)) * self.w3(x))


class KVCache(NamedTuple):
  """One layer's cache: k, v [B, T, N, H] in the compute dtype, T the preallocated length."""

  k: jax.Array
  v: jax.Array

  @classmethod
  def zeros(cls, batch: int, length: int, heads: int, head_dim: int, dtype: Dtype) -> KVCache:
    shape = (batch, length, heads, head_dim)
    return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


class ARAttention(nnx.Module):
  """Causal attention with QK-norm before RoPE, optional KV cache."""

  def __init__(self, width: int, heads: int, *, attn_dropout: float, dtype: Dtype,
               rngs: nnx.Rngs):
    self.heads = heads
    self.attn_dropout = attn_dropout
    head_dim = width // heads
    self.qkv = _linear(width, 3 * width, rngs, dtype)
    self.q_norm = RMSNorm(head_dim)
    self.k_norm = RMSNorm(head_dim)
    self.proj = _linear(width, width, rngs, dtype)

  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array, *,
               cache: KVCache | None = None, cache_index: jax.Array | None = None,
               key: jax.Array | None = None, attend_len: int | None = None,
               attention: str = 'einsum') -> tuple[jax.Array, KVCache | None]:
    """x [B, L, D]; cos, sin [L, H/2] or [B, L, H/2] for these positions.

    Without a cache, attends over x itself under `mask` [L, L]. With one, writes this step's k, v
    at `cache_index` (positions cache_index .. cache_index + L - 1) and attends over the cache under
    `mask` [.., L, T]: the whole cache, or only its first `attend_len` positions (a static prefix
    that holds every filled position, so decoding reads only that part); returns the updated
    cache. `attention='reduce'` computes one-query attention with `attend_one_query`.
    """
    b, l, d = x.shape
    qkv = self.qkv(x).reshape(b, l, 3, self.heads, d // self.heads)  # [B, L, 3, N, H]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q = rope.apply_rope(self.q_norm(q), cos, sin)
    k = rope.apply_rope(self.k_norm(k), cos, sin)
    if cache is not None:
      start = (0, cache_index, 0, 0)
      cache = KVCache(jax.lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), start),
                      jax.lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), start))
      k, v = cache.k, cache.v
      if attend_len is not None:
        k, v = k[:, :attend_len], v[:, :attend_len]  # [B, T, N, H], T = attend_len
    if attention == 'reduce' and l == 1 and key is None:
      out = attend_one_query(q, k, v, mask)
    elif attention in ('einsum', 'reduce'):
      out = attend(q, k, v, mask, self.attn_dropout, key)
    else:
      raise ValueError(f"attention must be 'einsum' or 'reduce', got {attention!r}")
    return self.proj(out.reshape(b, l, d)), cache


class ARBlock(nnx.Module):
  """x + drop(attn(norm1(x))); x + drop(mlp(norm2(x)))."""

  def __init__(self, width: int, heads: int, ffn_hidden: int, *, dropout: float,
               attn_dropout: float, dtype: Dtype, rngs: nnx.Rngs):
    self.dropout = dropout
    self.norm1 = RMSNorm(width)
    self.attn = ARAttention(width, heads, attn_dropout=attn_dropout, dtype=dtype, rngs=rngs)
    self.norm2 = RMSNorm(width)
    self.mlp = SwiGLU(width, ffn_hidden, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array, *,
               cache: KVCache | None = None, cache_index: jax.Array | None = None,
               key: jax.Array | None = None, attend_len: int | None = None,
               attention: str = 'einsum') -> tuple[jax.Array, KVCache | None]:
    k_attn, k_res1, k_res2 = split_key(key, 3)
    h, cache = self.attn(self.norm1(x), cos, sin, mask, cache=cache, cache_index=cache_index,
                         key=k_attn, attend_len=attend_len, attention=attention)
    x = x + dropout(h, self.dropout, k_res1)
    x = x + dropout(self.mlp(self.norm2(x)), self.dropout, k_res2)
    return x, cache
