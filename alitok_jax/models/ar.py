"""The class-conditional decoder-only AR model of AliTok (LlamaGen-style), with an explicit KV cache.

ALITOK_REFERENCE.md section 3 (`modeling/ar.py:ARModel`). One embedding table of 5098 rows serves
codes (rows 0..4095), classes (4097 + c) and the "no class" token (5097). A sequence is
[class token, 273 codes] = 274 positions; the logits at position t predict code t. Blocks use
RMSNorm, QK-norm before RoPE (rotary table of `rope.py`), SwiGLU; a final RMSNorm and the `output`
head with bias. Training adds token-embedding, attention and residual dropouts.

The cache is not module state: `__call__` takes per-layer `KVCache`s and returns the updated ones,
so decoding is a pure function that `lax.scan` can carry.

Dimension letters: B batch, L tokens in this call, T cache length, D width, V codebook size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from alitok_jax.models import layers, rope
from alitok_jax.models.variants import ARConfig


class ARTransformer(nnx.Module):
  """tokens [B, L] (embedding rows) -> logits [B, L, V] float32 (+ updated caches)."""

  def __init__(self, cfg: ARConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.config = cfg
    self.dtype = dtype
    self.embeddings = nnx.Embed(cfg.vocab_size, cfg.width, dtype=dtype,
                                embedding_init=layers.normal_init, rngs=rngs)
    self.blocks = nnx.List([
        layers.ARBlock(cfg.width, cfg.heads, cfg.ffn_hidden, dropout=cfg.dropout,
                       attn_dropout=cfg.attn_dropout, dtype=dtype, rngs=rngs)
        for _ in range(cfg.depth)
    ])
    self.norm = layers.RMSNorm(cfg.width)
    # The reference zero-initialises the output head.
    self.output = nnx.Linear(cfg.width, cfg.codebook_size, dtype=dtype,
                             kernel_init=layers.zeros_init, bias_init=layers.zeros_init, rngs=rngs)

  def rope_tables(self) -> tuple[jax.Array, jax.Array]:
    """(cos, sin) float32 [274, H/2], constants under jit."""
    cfg = self.config
    cos, sin = rope.rope_table(cfg.head_dim, cfg.prefix_tokens, cfg.grid_size, cfg.rope_base)
    return jnp.asarray(cos), jnp.asarray(sin)

  def init_cache(self, batch: int, length: int | None = None,
                 dtype=None) -> list[layers.KVCache]:
    """Zeroed per-layer caches [B, T, N, H] (T defaults to the full 274 positions)."""
    cfg = self.config
    length = cfg.seq_len if length is None else length
    return [layers.KVCache.zeros(batch, length, cfg.heads, cfg.head_dim, dtype or self.dtype)
            for _ in range(cfg.depth)]

  def __call__(self, tokens: jax.Array, *, start: jax.Array | int = 0,
               cache: list[layers.KVCache] | None = None, key: jax.Array | None = None,
               attend_len: int | None = None, attention: str = 'einsum', remat: bool = False,
               ) -> tuple[jax.Array, list[layers.KVCache] | None]:
    """Runs positions start .. start + L - 1.

    tokens [B, L] int embedding rows (class row first when start == 0). Without a cache the call
    must start at 0 and is causal over its own L tokens (teacher forcing). With `cache` (from
    `init_cache`), this step's keys and values are written at `start` and each token attends to
    cache positions <= its own. `key` turns dropout on (training); None is inference.

    Decoding options (with a cache): `attend_len`, a static int, makes attention read only the
    cache's first `attend_len` positions, which must cover start + L - 1 (the scan sampler splits
    its 273 steps into segments of growing `attend_len`); `attention='reduce'` computes
    one-token attention as float32 products and sums instead of matrix products
    (`layers.attend_one_query`; same result, a different kernel).

    `remat=True` (training, no cache) recomputes each block's activations in the backward pass
    instead of keeping them (`jax.checkpoint` per block): less memory, ~1/3 more compute.
    """
    cfg = self.config
    b, l = tokens.shape
    cos_table, sin_table = self.rope_tables()
    cos = jax.lax.dynamic_slice_in_dim(cos_table, start, l)  # [L, H/2]
    sin = jax.lax.dynamic_slice_in_dim(sin_table, start, l)
    if cache is None:
      if not isinstance(start, int) or start != 0:
        raise ValueError('a call without a cache must start at position 0')
      mask = layers.causal_mask(l)  # [L, L]
    else:
      t = cache[0].k.shape[1]
      if attend_len is not None:
        if not 0 < attend_len <= t:
          raise ValueError(f'attend_len must lie in [1, {t}] (the cache length), got {attend_len}')
        t = attend_len
      query_pos = start + jnp.arange(l)
      mask = jnp.arange(t)[None, :] <= query_pos[:, None]  # [L, T]
    k_tok, *k_blocks = layers.split_key(key, 1 + cfg.depth)
    x = layers.dropout(self.embeddings(tokens), cfg.token_dropout, k_tok)  # [B, L, D]
    new_cache = None if cache is None else []
    if remat and cache is None:
      for i, block in enumerate(self.blocks):
        x = _rematerialised_block(block, x, cos, sin, mask, k_blocks[i])
      return self.output(self.norm(x)).astype(jnp.float32), None
    for i, block in enumerate(self.blocks):
      x, layer_cache = block(x, cos, sin, mask, cache=None if cache is None else cache[i],
                             cache_index=start, key=k_blocks[i], attend_len=attend_len,
                             attention=attention)
      if cache is not None:
        new_cache.append(layer_cache)
    logits = self.output(self.norm(x)).astype(jnp.float32)  # [B, L, V]
    return logits, new_cache


def _rematerialised_block(block: layers.ARBlock, x, cos, sin, mask, key) -> jax.Array:
  """block(x) under jax.checkpoint, as a pure function of the block's state."""
  graphdef, state = nnx.split(block)

  @jax.checkpoint
  def run(state, x, key):
    return nnx.merge(graphdef, state)(x, cos, sin, mask, key=key)[0]

  return run(state, x, key)


def class_tokens(labels: jax.Array | None, batch: int, cfg: ARConfig) -> jax.Array:
  """Embedding rows of the class tokens: 4097 + label, or the "no class" row for None / -1."""
  if labels is None:
    return jnp.full((batch,), cfg.no_class_id, jnp.int32)
  labels = jnp.asarray(labels, jnp.int32)
  return jnp.where(labels < 0, cfg.no_class_id, labels + cfg.class_offset)


def drop_labels(labels: jax.Array, rate: float, key: jax.Array) -> jax.Array:
  """Label dropout for CFG training: each label becomes -1 ("no class") with probability rate."""
  return jnp.where(jax.random.bernoulli(key, rate, labels.shape), -1, labels)


def teacher_forced_tokens(codes: jax.Array, labels: jax.Array | None, cfg: ARConfig) -> jax.Array:
  """[class token, codes] -> [B, 274] embedding rows for a teacher-forced forward."""
  cls = class_tokens(labels, codes.shape[0], cfg)
  return jnp.concatenate([cls[:, None], codes.astype(jnp.int32)], axis=1)
