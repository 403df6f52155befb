"""Model invariants: released sizes, causality, KV cache == full forward, quantiser behaviour."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alitok_jax.models import ar as ar_lib
from alitok_jax.models import build, quantizer, rope, variants


@pytest.mark.parametrize('name,config,expected', [
    ('tokenizer stage 2', variants.TOKENIZER['stage2'], 389_899_308),
    ('tokenizer stage 1', variants.TOKENIZER['stage1'], 390_623_032),
    ('AR-B', variants.AR['B'], 177_048_064),
    ('AR-L', variants.AR['L'], 317_851_648),
    ('AR-XL', variants.AR['XL'], 662_141_696),
])
def test_parameter_counts_equal_reference(name, config, expected):
  # Reference: 389.9M (tokenizer), 177.0M / 317.9M / 662.1M (AR), state_dict_keys.json totals.
  assert build.count_params(config) == expected, name


def test_ar_sizes_follow_reference_table():
  assert [variants.AR[k].ffn_hidden for k in ('B', 'L', 'XL')] == [2048, 2816, 3584]
  assert [variants.AR[k].head_dim for k in ('B', 'L', 'XL')] == [48, 64, 80]
  cfg = variants.AR['B']
  assert (cfg.vocab_size, cfg.class_offset, cfg.no_class_id, cfg.seq_len) == (5098, 4097, 5097, 274)


def test_rope_table_rows():
  cos, sin = rope.rope_table(16, 17, 16)
  assert cos.shape == (274, 8)
  np.testing.assert_array_equal(cos[0], 0)  # class token: zeroed q and k
  np.testing.assert_array_equal(sin[0], 0)
  # Prefix token i (row 1 + i) rotates pair j by i * 10000^(-2j/16).
  inv = 10000.0 ** (-np.arange(0, 16, 2) / 16)
  np.testing.assert_allclose(sin[1 + 5], np.sin(5 * inv), atol=1e-6)
  # Grid token (r, c) = (3, 7): first 4 pairs by 17 + 3, last 4 by 17 + 7, freqs 10000^(-2i/8).
  inv2 = 10000.0 ** (-np.arange(0, 8, 2) / 8)
  row = 1 + 17 + 3 * 16 + 7
  np.testing.assert_allclose(sin[row], np.sin(np.concatenate([20 * inv2, 24 * inv2])), atol=1e-6)


@pytest.fixture(scope='module')
def tiny_ar():
  return build.create(variants.AR['tiny'], seed=1)


def _random_tokens(cfg, batch, seed=0):
  rng = np.random.default_rng(seed)
  codes = rng.integers(0, cfg.codebook_size, (batch, cfg.image_seq_len))
  labels = rng.integers(0, cfg.num_classes, (batch,))
  return ar_lib.teacher_forced_tokens(jnp.asarray(codes), jnp.asarray(labels), cfg)


def _with_random_head(model):
  # The reference zero-initialises the output head; give it weights so logits are informative.
  model.output.kernel[...] = jax.random.normal(jax.random.key(7), model.output.kernel.shape)
  return model


def test_ar_is_causal(tiny_ar):
  model = _with_random_head(tiny_ar)
  cfg = model.config
  tokens = _random_tokens(cfg, 2)
  t = 100
  changed = tokens.at[:, t + 1:].set((tokens[:, t + 1:] + 1) % cfg.codebook_size)
  a, _ = model(tokens)
  b, _ = model(changed)
  np.testing.assert_array_equal(np.asarray(a[:, :t + 1]), np.asarray(b[:, :t + 1]))
  assert not np.allclose(np.asarray(a[:, t + 1:]), np.asarray(b[:, t + 1:]))


def test_ar_cached_steps_equal_full_forward(tiny_ar):
  model = _with_random_head(tiny_ar)
  cfg = model.config
  tokens = _random_tokens(cfg, 2, seed=3)
  full, _ = model(tokens)

  @jax.jit
  def decode(tokens):
    cache = model.init_cache(tokens.shape[0])
    # Prefill 5 positions at once, then one token per step.
    logits0, cache = model(tokens[:, :5], start=0, cache=cache)

    def step(cache, i):
      tok = jax.lax.dynamic_slice_in_dim(tokens, i, 1, axis=1)
      logits, cache = model(tok, start=i, cache=cache)
      return cache, logits[:, 0]

    _, rest = jax.lax.scan(step, cache, jnp.arange(5, tokens.shape[1]))
    return jnp.concatenate([logits0, rest.transpose(1, 0, 2)], axis=1)

  cached = decode(tokens)
  scale = float(jnp.abs(full).max())
  assert float(jnp.abs(cached - full).max()) <= 1e-5 * scale


def test_ar_dropout_only_with_key(tiny_ar):
  model = _with_random_head(tiny_ar)
  tokens = _random_tokens(model.config, 2)
  a, _ = model(tokens)
  b, _ = model(tokens)
  c, _ = model(tokens, key=jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(np.asarray(a), np.asarray(c))


def test_class_tokens_and_label_dropout():
  cfg = variants.AR['tiny']
  np.testing.assert_array_equal(ar_lib.class_tokens(jnp.array([0, 999, -1]), 3, cfg),
                                [4097, 5096, 5097])
  np.testing.assert_array_equal(ar_lib.class_tokens(None, 2, cfg), [5097, 5097])
  dropped = ar_lib.drop_labels(jnp.arange(10000) % 1000, 0.1, jax.random.key(0))
  assert 0.08 < float(jnp.mean(dropped == -1)) < 0.12


@pytest.fixture(scope='module')
def tiny_stage1():
  return build.create(variants.TOKENIZER['tiny_stage1'], seed=2)


def test_stage1_decoder_is_causal(tiny_stage1):
  # Changing latent token t + 1 leaves every output of tokens <= t unchanged.
  cfg = tiny_stage1.config
  z = jax.random.normal(jax.random.key(0), (1, cfg.num_latent_tokens, cfg.token_size))
  t = cfg.prefix_tokens + 40  # grid token 40 = patch (2, 8)
  z2 = z.at[:, t + 1:].add(1.0)
  img_a, prefix_a = tiny_stage1.decode(z)
  img_b, prefix_b = tiny_stage1.decode(z2)
  np.testing.assert_array_equal(np.asarray(prefix_a), np.asarray(prefix_b))
  p = cfg.patch_size
  # Patches 0..40 in raster order: rows 0-1 whole, row 2 up to column 8.
  np.testing.assert_array_equal(np.asarray(img_a[:, :2 * p]), np.asarray(img_b[:, :2 * p]))
  np.testing.assert_array_equal(np.asarray(img_a[:, 2 * p:3 * p, :9 * p]),
                                np.asarray(img_b[:, 2 * p:3 * p, :9 * p]))
  assert not np.allclose(np.asarray(img_a[:, 3 * p:]), np.asarray(img_b[:, 3 * p:]))


def test_stage2_decoder_is_bidirectional():
  model = build.create(variants.TOKENIZER['tiny_stage2'], seed=3)
  cfg = model.config
  z = jax.random.normal(jax.random.key(0), (1, cfg.num_latent_tokens, cfg.token_size))
  img_a, prefix = model.decode(z)
  img_b, _ = model.decode(z.at[:, -1].add(1.0))  # the last token changes the first patch
  assert prefix is None
  assert np.abs(np.asarray(img_a[:, :16, :16]) - np.asarray(img_b[:, :16, :16])).max() > 0


def test_quantizer_picks_nearest_and_passes_gradients_straight_through():
  codebook = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
  z = jnp.array([[[0.9, 0.1], [0.1, 1.2], [-0.2, 0.1]]])
  out = quantizer.quantize(z, codebook)
  np.testing.assert_array_equal(out.codes, [[1, 2, 0]])
  np.testing.assert_allclose(out.quantized, codebook[jnp.array([1, 2, 0])][None], atol=1e-7)
  mse = float(jnp.mean((codebook[jnp.array([1, 2, 0])] - z[0]) ** 2))
  np.testing.assert_allclose([out.commitment_loss, out.codebook_loss], [0.25 * mse, mse], rtol=1e-6)
  grad = jax.grad(lambda z: jnp.sum(quantizer.quantize(z, codebook).quantized * 3.0))(z)
  np.testing.assert_allclose(grad, 3.0 * jnp.ones_like(z))


def test_clustered_codebook_update_revives_dead_codes():
  # Codes 0 and 1 are used; code 2 is far from every feature and never used.
  codebook = jnp.array([[0.0, 0.0], [1.0, 0.0], [50.0, 50.0]])
  usage = jnp.array([0.5, 0.5, 0.0])
  z = jnp.array([[0.1, 0.0], [0.9, 0.1], [0.2, 0.3], [1.1, -0.1]])
  new_codebook, new_usage = quantizer.clustered_codebook_update(codebook, usage, z)
  # Usage: 0.99 * old + 0.01 * assignment fractions (2 of 4 tokens each to codes 0 and 1).
  np.testing.assert_allclose(new_usage, [0.5, 0.5, 0.0], atol=1e-7)
  # Live codes keep their place (decay = exp(-0.5 * 3 * 10 / 0.01) = 0); the dead one moves with
  # decay exp(-1e-3) onto the token closest to (50, 50), which is (0.9, 0.1).
  np.testing.assert_allclose(new_codebook[:2], codebook[:2], atol=1e-6)
  decay = np.exp(-1e-3)
  np.testing.assert_allclose(new_codebook[2], (1 - decay) * 50.0 + decay * np.array([0.9, 0.1]),
                             rtol=1e-5)


def test_kernel_init_choices():
  """'reference' draws every kernel from N(0, 0.02) as the reference; 'fan_in' from
  N(0, 1 / fan_in); the released tokenizers keep the reference's."""
  import dataclasses  # noqa: PLC0415

  assert all(variants.TOKENIZER[k].kernel_init == 'reference'
             for k in ('stage1', 'stage2', 'tiny_stage1', 'tiny_stage2'))
  base = variants.TOKENIZER['tiny_stage1']
  for name, std_of in (('reference', lambda fan_in: 0.02), ('fan_in', lambda fan_in: fan_in**-0.5)):
    params = build.random_params(dataclasses.replace(base, kernel_init=name), seed=0)
    for kernel in (params['encoder']['transformer'][0]['mlp']['c_fc']['kernel'],
                   params['decoder']['ffn']['kernel'], params['encoder']['patch_embed']['kernel']):
      fan_in = int(np.prod(kernel.shape[:-1]))
      assert float(np.std(kernel)) == pytest.approx(std_of(fan_in), rel=0.15), (name, kernel.shape)
  with pytest.raises(ValueError, match='kernel_init'):
    dataclasses.replace(base, kernel_init='xavier')
