"""The jitted KV-cache sampler: cached decoding == full forward, parity with the reference's
greedy and guided distributions (../shared/fixtures/ar), strategies, RNG, 8 devices == 1."""

from __future__ import annotations

import dataclasses

import isolated
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_io

from alitok_jax import Generator, Tokenizer
from alitok_jax.models import variants
from alitok_jax.sample import cfg as cfg_lib
from alitok_jax.sample import decode
from alitok_jax.sample import sampler as sampler_lib
from alitok_jax.sample import strategies

GUIDANCE, POWER = 4.0, 1.4  # the fixture's CFG settings (ar.json)


@pytest.fixture(scope='module')
def gen(model_dirs):
  return Generator.load(model_dirs['ar'])


@pytest.fixture(scope='module')
def io():
  return load_io('ar')


@pytest.mark.parametrize('segments,attention', [(1, 'einsum'), (3, 'reduce'), (8, 'einsum')])
def test_cached_step_logits_equal_full_forward(gen, io, segments, attention):
  cfg = gen.config
  rows = sampler_lib.class_rows(jnp.asarray(io['labels']), True, cfg)  # [4]: class, no class
  codes = np.repeat(io['ids'], 2, axis=0)  # [4, 273]
  graphdef, params = gen.graphdef, gen.params
  plan = sampler_lib.DecodePlan(segments=segments, attention=attention)
  cached = np.asarray(sampler_lib.cached_logits(graphdef, params, rows, jnp.asarray(codes),
                                                plan=plan))
  tokens = jnp.concatenate([rows[:, None], jnp.asarray(codes)], axis=1)
  full = np.asarray(gen.module()(tokens)[0][:, :-1])
  scale = np.abs(full).max()
  assert np.abs(cached - full).max() <= 1e-5 * scale
  # And both halves equal the reference's teacher-forced logits.
  np.testing.assert_allclose(cached[0::2], io['logits'][:, :-1], atol=1e-4 * scale)
  np.testing.assert_allclose(cached[1::2], io['logits_uncond'][:, :-1], atol=1e-4 * scale)


@pytest.mark.parametrize('segments,attention', [(8, 'einsum'), (3, 'reduce')])
def test_cached_step_logits_equal_full_forward_at_1057_codes(gen, segments, attention):
  """512 pixels: the same weights over 1,057 codes (RoPE rows up to grid row 31)."""
  cfg = variants.sized(gen.config, image_size=512)
  big = Generator(cfg, gen.params)
  rows = sampler_lib.class_rows(jnp.asarray([3, 917]), True, cfg)  # [4]
  codes = np.repeat(np.random.default_rng(0).integers(0, 4096, (2, 1057)), 2, axis=0)
  plan = sampler_lib.DecodePlan(segments=segments, attention=attention)
  cached = np.asarray(sampler_lib.cached_logits(big.graphdef, big.params, rows,
                                                jnp.asarray(codes), plan=plan))
  tokens = jnp.concatenate([rows[:, None], jnp.asarray(codes)], axis=1)
  full = np.asarray(big.module()(tokens)[0][:, :-1])
  assert cached.shape == full.shape == (4, 1057, 4096)
  assert np.abs(cached - full).max() <= 1e-5 * np.abs(full).max()


def test_segment_ends_cover_the_cache():
  assert sampler_lib.segment_ends(273, 1) == (273,)
  ends = sampler_lib.segment_ends(273, 8)
  assert len(ends) == 8 and ends[-1] == 273 and list(ends) == sorted(set(ends))
  assert all(e % 8 == 0 for e in ends[:-1])
  assert sampler_lib.segment_ends(5, 8, multiple=1) == (2, 3, 4, 5)


@pytest.mark.parametrize('segments,attention', [(8, 'einsum'), (3, 'reduce')])
def test_top_k_1_reproduces_reference_greedy_codes(gen, io, segments, attention):
  codes = gen.sample(io['labels'], GUIDANCE, POWER, top_k=1, seed=123, segments=segments,
                     attention=attention)
  assert codes.dtype == jnp.int32 and codes.shape == (2, 273)
  np.testing.assert_array_equal(np.asarray(codes), io['greedy_ids'])


def test_guided_distributions_match_reference(gen, io):
  probs = np.asarray(gen.guided_probs(io['sampled_ids'], io['labels'], GUIDANCE, POWER))
  assert probs.shape == (2, 273, 4096)
  np.testing.assert_allclose(probs, io['sample_probs'], atol=2e-4, rtol=0)


def test_sampled_codes_come_from_the_guided_filtered_distribution(gen, io):
  # Every code the scan sampler draws with top-k = 3 lies among the top 3 of the teacher-forced
  # guided distribution at its step: the guidance step and the filters line up.
  codes = np.asarray(gen.sample(io['labels'], GUIDANCE, POWER, top_k=3, seed=5))
  probs = np.asarray(gen.guided_probs(codes, io['labels'], GUIDANCE, POWER, top_k=3))
  picked = np.take_along_axis(probs, codes[..., None], axis=-1)[..., 0]
  assert picked.min() > 0
  assert ((probs > 0).sum(-1) == 3).all()
  # Without top-k the draws are random: not all greedy, but all from the guided distribution.
  free = np.asarray(gen.sample(io['labels'], GUIDANCE, POWER, seed=5))
  assert (free != io['greedy_ids']).any()
  probs = np.asarray(gen.guided_probs(free, io['labels'], GUIDANCE, POWER))
  assert np.take_along_axis(probs, free[..., None], axis=-1).min() > 0


def test_randomness_is_per_image(gen, io):
  labels = io['labels']  # [3, 917]
  a = np.asarray(gen.sample(labels, GUIDANCE, POWER, seed=7))
  np.testing.assert_array_equal(a, np.asarray(gen.sample(labels, GUIDANCE, POWER, seed=7)))
  assert (a != np.asarray(gen.sample(labels, GUIDANCE, POWER, seed=8))).mean() > 0.5
  # Image b depends on (seed, first_index + b) only, not on its place or its batch.
  shifted = np.asarray(gen.sample(labels[::-1], GUIDANCE, POWER, seed=7, first_index=1))
  np.testing.assert_array_equal(shifted[0], a[1])
  np.testing.assert_array_equal(np.asarray(gen.sample(labels[1:], GUIDANCE, POWER, seed=7,
                                                      first_index=1)), a[1:])
  # Two images of one class get different keys.
  same = np.asarray(gen.sample(np.array([3, 3]), GUIDANCE, POWER, seed=7))
  np.testing.assert_array_equal(same[0], a[0])
  assert (same[0] != same[1]).mean() > 0.5


def test_no_guidance_samples_the_conditional_distribution(gen, io):
  codes = np.asarray(gen.sample(io['labels'], 0.0, POWER, top_k=1))
  # Greedy under plain conditional logits = argmax of the teacher-forced logits, step by step.
  logits = np.asarray(gen.logits(codes, io['labels']))[:, :-1]
  np.testing.assert_array_equal(codes, logits.argmax(-1))
  assert not cfg_lib.Guidance.create(1.0, 2.0).enabled
  assert cfg_lib.Guidance.create(4.0, 1.4).enabled


@pytest.mark.parametrize('codes', [273, 1057])  # 256 and 512 pixels
def test_guidance_schedule(codes):
  g = cfg_lib.Guidance.create(16.0, 1.8).for_codes(codes)
  assert g.num_steps == codes and g.for_codes(codes) is g
  steps = np.arange(codes + 1)
  scale = np.asarray(g.scale_at(steps))
  assert scale[0] == 1.0 and abs(scale[codes] - 16.0) < 1e-5
  assert (np.diff(scale) >= 0).all() and scale[codes * 100 // 273] < 8.5 < scale[codes * 250 // 273]
  expected = 15.0 * (1 - np.cos((steps / codes) ** 1.8 * np.pi)) / 2 + 1
  np.testing.assert_allclose(scale, expected, rtol=1e-6)
  with pytest.raises(ValueError, match='num_steps is not set'):
    cfg_lib.Guidance.create(16.0, 1.8).scale_at(steps)
  with pytest.raises(ValueError, match=f'num_steps = {codes}, but this model samples 5 codes'):
    g.for_codes(5)
  cond, uncond = jnp.array([2.0, 0.0]), jnp.array([1.0, 1.0])
  np.testing.assert_allclose(np.asarray(cfg_lib.combine(cond, uncond, 3.0)), [4.0, -2.0])


def test_strategies_filter_as_specified():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = lambda x: np.isfinite(np.asarray(x))[0].tolist()  # noqa: E731
  assert kept(strategies.TopK(2)(logits)) == [True, True, False, False]
  assert kept(strategies.TopK(1)(logits)) == [True, False, False, False]
  assert kept(strategies.TopP(0.7)(logits)) == [True, True, False, False]
  assert kept(strategies.TopP(0.5)(logits)) == [True, False, False, False]
  assert kept(strategies.TopP(0.81)(logits)) == [True, True, True, False]
  assert kept(strategies.TopP(1.0)(logits)) == [True] * 4
  np.testing.assert_allclose(np.asarray(strategies.Temperature(2.0)(logits)),
                             np.asarray(logits) / 2)
  s = strategies.Sampling.create(temperature=0.5, top_k=3, top_p=0.95)
  probs = np.asarray(s.probs(logits))[0]
  t = np.array([0.5, 0.3, 0.15]) ** 2  # temperature 0.5 squares the probabilities
  np.testing.assert_allclose(probs[:3], t / t.sum(), rtol=1e-5)
  assert probs[3] == 0
  # top-p after temperature and top-k: the renormalised top 3 are 0.69 / 0.25 / 0.06, so 0.9
  # keeps two.
  probs = np.asarray(strategies.Sampling.create(0.5, 3, 0.9).probs(logits))[0]
  np.testing.assert_allclose(probs[:2], t[:2] / t[:2].sum(), rtol=1e-5)


def test_min_p_keeps_codes_near_the_most_likely():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = lambda x: np.isfinite(np.asarray(x))[0].tolist()  # noqa: E731
  assert kept(strategies.MinP(0.5)(logits)) == [True, True, False, False]  # p >= 0.25
  assert kept(strategies.MinP(0.2)(logits)) == [True, True, True, False]  # p >= 0.1
  assert kept(strategies.MinP(0.0)(logits)) == [True] * 4
  assert kept(strategies.MinP(1.0)(logits)) == [True, False, False, False]
  with pytest.raises(ValueError, match=r'min_p must lie in \[0, 1\]'):
    strategies.MinP(1.5)


def test_sampling_parse_names_the_filters_in_order():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  parsed = strategies.Sampling.parse('temperature=0.5,top_k=3,top_p=0.95')
  np.testing.assert_array_equal(np.asarray(parsed.probs(logits)),
                                np.asarray(strategies.Sampling.create(0.5, 3, 0.95).probs(logits)))
  assert str(parsed) == 'temperature=0.5,top_k=3,top_p=0.95'
  both = strategies.Sampling.create(1.0, extra='min_p=0.5')
  assert [type(f).__name__ for f in both.filters] == ['Temperature', 'MinP']
  assert strategies.Sampling.parse('').filters == ()
  with pytest.raises(ValueError, match='is not NAME=VALUE with NAME one of min_p, '):
    strategies.Sampling.parse('typical=0.9')
  with pytest.raises(ValueError, match='top_k must be an integer >= 1'):
    strategies.Sampling.parse('top_k=0')
  with pytest.raises(TypeError, match='registered logit filters'):
    strategies.Sampling((lambda x: x,))


# A filter written in a test, as a user would add one: registered, then usable everywhere.
@strategies.logit_filter('test_multiples_of', static=('m',))
@dataclasses.dataclass(frozen=True)
class MultiplesOf:
  """Keeps the codes that are multiples of m."""

  m: int

  def __call__(self, logits):
    codes = jnp.arange(logits.shape[-1])
    return jnp.where(codes % self.m == 0, logits, -jnp.inf)


def test_a_new_filter_needs_no_other_change(gen, io):
  labels = io['labels']
  by_object = np.asarray(gen.sample(labels, GUIDANCE, POWER, seed=5, sampling=strategies.Sampling(
      (strategies.Temperature(1.0), MultiplesOf(7)))))
  assert (by_object % 7 == 0).all() and len(np.unique(by_object)) > 10
  by_name = np.asarray(gen.sample(labels, GUIDANCE, POWER, seed=5,
                                  sampling=strategies.Sampling.parse('test_multiples_of=7')))
  np.testing.assert_array_equal(by_name, by_object)  # temperature 1 changes nothing


def test_strategy_objects_equal_the_numeric_short_form(gen, io):
  labels = io['labels']
  short = np.asarray(gen.sample(labels, GUIDANCE, POWER, temperature=0.8, top_k=50, seed=2))
  objects = np.asarray(gen.sample(labels, seed=2, guidance=cfg_lib.Guidance.create(
      GUIDANCE, POWER, gen.config.image_seq_len), sampling=strategies.Sampling.create(0.8, 50)))
  np.testing.assert_array_equal(short, objects)
  np.testing.assert_allclose(
      np.asarray(gen.guided_probs(short, labels, GUIDANCE, POWER, 0.8, 50)),
      np.asarray(gen.guided_probs(short, labels, sampling=strategies.Sampling.create(0.8, 50),
                                  guidance=cfg_lib.Guidance(GUIDANCE, POWER))), rtol=1e-6)
  with pytest.raises(ValueError, match='either guidance=Guidance'):
    gen.sample(labels, GUIDANCE, POWER, guidance=cfg_lib.Guidance(GUIDANCE, POWER))
  with pytest.raises(ValueError, match='either sampling=Sampling'):
    gen.sample(labels, GUIDANCE, POWER, top_k=5, sampling=strategies.Sampling.create())
  with pytest.raises(ValueError, match='give guidance_scale and guidance_pow'):
    gen.sample(labels)
  with pytest.raises(ValueError, match='num_steps = 100, but this model samples 273 codes'):
    gen.sample(labels, guidance=cfg_lib.Guidance(GUIDANCE, POWER, num_steps=100))
  with pytest.raises(ValueError, match='top_k = 5000 exceeds the 4096 codes'):
    gen.sample(labels, GUIDANCE, POWER, sampling=strategies.Sampling.parse('top_k=5000'))
  assert not cfg_lib.Guidance(1.0, 2.0).enabled and cfg_lib.Guidance(4.0, 1.4).enabled
  with pytest.raises(ValueError, match='guidance_pow must be >= 0'):
    cfg_lib.Guidance(4.0, -1.0)


def test_draws_follow_the_distribution():
  probs = np.array([0.6, 0.25, 0.1, 0.05], np.float32)
  n = 20000
  keys = jax.random.split(jax.random.key(0), n)
  logits = jnp.broadcast_to(jnp.log(probs), (n, 4))
  draws = np.asarray(jax.jit(strategies.draw)(keys, logits))
  np.testing.assert_allclose(np.bincount(draws, minlength=4) / n, probs, atol=0.015)


@pytest.mark.parametrize('kwargs,match', [
    ({'labels': [3, 1000]}, r'labels must lie in \[0, 1000\)'),
    ({'labels': [[3]]}, 'labels must be a 1-D array'),
    ({'labels': None}, 'labels must be a 1-D array'),
    ({'temperature': 0.0}, 'temperature must be a finite number > 0'),
    ({'top_k': 0}, 'top_k must be an integer >= 1'),
    ({'top_k': 5000}, 'top_k = 5000 exceeds the 4096 codes'),
    ({'top_p': 1.5}, r'top_p must lie in \(0, 1\]'),
    ({'seed': -1}, r'seed must be an integer in \[0, 4294967296\)'),
    ({'guidance_scale': float('nan')}, 'guidance_scale must be a finite number'),
    ({'guidance_pow': -1.0}, 'guidance_pow must be >= 0'),
])
def test_bad_sampling_arguments_are_refused_clearly(gen, kwargs, match):
  args = {'labels': [3, 917], 'guidance_scale': GUIDANCE, 'guidance_pow': POWER, **kwargs}
  with pytest.raises((ValueError, TypeError), match=match):
    gen.sample(**args)


def _eight_devices_equal_one(cfg):
  """(generator, labels, codes on one device): a random `cfg` model with peaky logits samples
  8 images on 8 devices as on one, each device holding one image's codes."""
  assert jax.device_count() == 8, jax.devices()
  gen = Generator.random(cfg, seed=0)
  params = gen.params
  kernel = params['output']['kernel']
  params['output']['kernel'] = 3.0 * jax.random.normal(jax.random.key(1), kernel.shape)
  gen = Generator(cfg, params)
  labels = np.arange(8) * 101 % 1000
  eight = gen.sample(labels, 4.0, 1.4, seed=3, segments=2)
  assert len(eight.sharding.device_set) == 8
  assert eight.addressable_shards[0].data.shape == (1, cfg.image_seq_len)
  eight = np.asarray(eight)
  one = np.asarray(gen.sample(labels, 4.0, 1.4, seed=3, segments=2, devices=jax.devices()[:1]))
  np.testing.assert_array_equal(eight, one)
  assert len(np.unique(eight)) > 100  # a real sample, not a constant
  return gen, labels, one


def check_eight_devices_sample_like_one():
  """(run by isolated.run on 8 fake devices) the same codes on 8 devices as on 1, padding, no
  cross-device traffic, and sharded decoding."""
  gen, labels, one = _eight_devices_equal_one(variants.AR['tiny'])
  # 6 images on 8 devices: padded, the same codes as the first 6 of the batch of 8.
  np.testing.assert_array_equal(np.asarray(gen.sample(labels[:6], 4.0, 1.4, seed=3,
                                                      segments=2)), one[:6])
  # No cross-device traffic: each device holds both CFG halves of its images.
  s = gen.sampler(segments=2)
  hlo = sampler_lib.sample_codes.lower(
      gen.graphdef, s.params, s.global_array(labels.astype(np.int32)),
      s.global_array(np.arange(8, dtype=np.int32)), np.uint32(0), cfg_lib.Guidance.create(4.0, 1.4),
      strategies.Sampling.create(0.9, 5, 0.9), plan=s.plan).compile().as_text()
  for op in ('all-gather', 'all-reduce', 'all-to-all', 'collective-permute', 'reduce-scatter'):
    assert op + '(' not in hlo and op + '-start(' not in hlo, op
  # Decoding with the batch sharded (3 images: padded) equals decoding on one device.
  tok = Tokenizer.random(variants.TOKENIZER['tiny_stage2'], seed=0)
  a = np.asarray(decode.Decoder(tok)(one[:3]))
  b = np.asarray(decode.Decoder(tok, devices=jax.devices()[:1])(one[:3]))
  assert a.shape == (3, 256, 256, 3) and a.dtype == np.uint8
  assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_eight_devices_sample_the_same_codes_as_one():
  isolated.run('test_sampler:check_eight_devices_sample_like_one', devices=8)


def check_eight_devices_sample_like_one_at_512():
  """(run by isolated.run on 8 fake devices) 1,057 codes: the same on 8 devices as on 1, and
  decoding 512-pixel images sharded as on one device."""
  _, _, one = _eight_devices_equal_one(variants.sized(variants.AR['tiny'], image_size=512))
  tok = Tokenizer.random(variants.sized(variants.TOKENIZER['tiny_stage2'], image_size=512),
                         seed=0)
  a = np.asarray(decode.Decoder(tok)(one[:2]))
  b = np.asarray(decode.Decoder(tok, devices=jax.devices()[:1])(one[:2]))
  assert a.shape == (2, 512, 512, 3) and a.dtype == np.uint8
  assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_eight_devices_sample_the_same_1057_codes_as_one():
  isolated.run('test_sampler:check_eight_devices_sample_like_one_at_512', devices=8)
