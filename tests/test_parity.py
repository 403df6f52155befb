"""Parity with the reference PyTorch code, through the converter and the public API.

The fixtures are tiny models run through the reference code in float32 (../shared/fixtures).
Tolerances: identical codes; continuous outputs within 1e-4 of the output's scale (max |ref|).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_io, nchw_to_nhwc

from alitok_jax import Generator, Tokenizer
from alitok_jax.models import tokenizer as tokenizer_lib

RTOL = 1e-4


def assert_close(actual, expected, what: str):
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, what
  scale = float(np.abs(expected).max())
  err = float(np.abs(actual - expected).max())
  assert err <= RTOL * scale, f'{what}: max error {err:.3g} > {RTOL} x scale {scale:.3g}'


@pytest.mark.parametrize('name', ['tokenizer', 'tokenizer_stage1'])
def test_tokenizer_encode_matches_reference(model_dirs, name):
  io = load_io(name)
  tok = Tokenizer.load(model_dirs[name])
  images = nchw_to_nhwc(io['images'])
  np.testing.assert_array_equal(np.asarray(tok.encode(images)), io['codes'])
  # encoded: [B, C, 1, L] in the reference layout.
  assert_close(tok.latents(images), io['encoded'][:, :, 0].transpose(0, 2, 1), 'encoder output')


@pytest.mark.parametrize('name', ['tokenizer', 'tokenizer_stage1'])
def test_tokenizer_decode_matches_reference(model_dirs, name):
  io = load_io(name)
  tok = Tokenizer.load(model_dirs[name])
  assert_close(tok.decode(io['codes']), nchw_to_nhwc(io['decoded']), 'decoded images')


def test_tokenizer_quantized_matches_reference(model_dirs):
  io = load_io('tokenizer')
  model = Tokenizer.load(model_dirs['tokenizer']).module()
  q = model.quantize(model.encode(nchw_to_nhwc(io['images'])))
  assert_close(q.quantized, io['quantized'][:, :, 0].transpose(0, 2, 1), 'quantized')


def test_stage1_prefix_head_and_quantizer_loss_match_reference(model_dirs):
  io = load_io('tokenizer_stage1')
  model = Tokenizer.load(model_dirs['tokenizer_stage1']).module()
  recon, prefix, q = model(nchw_to_nhwc(io['images']))
  assert_close(recon, nchw_to_nhwc(io['decoded']), 'stage-1 reconstruction')
  assert_close(prefix, nchw_to_nhwc(io['decoded_prefix']), 'prefix head output')
  assert_close(q.loss, io['quantizer_loss'], 'quantizer loss')
  np.testing.assert_array_equal(np.asarray(q.codes), io['codes'])


def test_prefix_target_layout():
  images = np.random.default_rng(0).random((2, 256, 256, 3), np.float32)
  target = np.asarray(tokenizer_lib.prefix_target(images))
  assert target.shape == (2, 16, 272, 3)
  np.testing.assert_array_equal(target[:, :, :16], images[:, :16, :16])
  np.testing.assert_array_equal(target[:, :, 16:], images[:, :16, :])


@pytest.mark.parametrize('conditional', [True, False])
def test_ar_logits_match_reference(model_dirs, conditional):
  io = load_io('ar')
  gen = Generator.load(model_dirs['ar'])
  labels = io['labels'] if conditional else None
  expected = io['logits'] if conditional else io['logits_uncond']
  assert_close(gen.logits(io['ids'], labels), expected, 'AR logits')

