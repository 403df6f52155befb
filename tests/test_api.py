"""The public API: input conventions and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_io, nchw_to_nhwc

from alitok_jax import Generator, Tokenizer
from alitok_jax.models import variants


@pytest.fixture(scope='module')
def tok(model_dirs):
  return Tokenizer.load(model_dirs['tokenizer'])


@pytest.fixture(scope='module')
def gen(model_dirs):
  return Generator.load(model_dirs['ar'])


def test_uint8_and_float_images_encode_alike(tok):
  images = nchw_to_nhwc(load_io('tokenizer')['images'])
  as_uint8 = np.round(images * 255).astype(np.uint8)
  np.testing.assert_array_equal(np.asarray(tok.encode(as_uint8)),
                                np.asarray(tok.encode(as_uint8.astype(np.float32) / 255)))


def test_output_shapes_and_ranges(tok, gen):
  codes = tok.encode(np.zeros((3, 256, 256, 3), np.uint8))
  assert codes.shape == (3, 273) and codes.dtype == np.int32
  images = tok.decode(codes)
  assert images.shape == (3, 256, 256, 3) and images.dtype == np.float32
  assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
  logits = gen.logits(np.asarray(codes), None)
  assert logits.shape == (3, 274, 4096) and logits.dtype == np.float32


@pytest.mark.parametrize('images,error,match', [
    (np.zeros((2, 3, 256, 256), np.float32), ValueError, 'looks like NCHW'),
    (np.zeros((256, 256, 3), np.float32), ValueError, 'looks like one image'),
    (np.zeros((2, 128, 128, 3), np.float32), ValueError, r'shape \[B, 256, 256, 3\]'),
    (np.zeros((0, 256, 256, 3), np.float32), ValueError, 'empty batch'),
    (np.zeros((1, 256, 256, 3), np.int32), TypeError, 'uint8 .* or float'),
    (np.full((1, 256, 256, 3), -1.0, np.float32), ValueError, r'\(images \+ 1\) / 2'),
    (np.full((1, 256, 256, 3), 200.0, np.float32), ValueError, 'divide by 255'),
    (np.full((1, 256, 256, 3), np.nan, np.float32), ValueError, 'NaN'),
])
def test_bad_images_are_refused_clearly(tok, images, error, match):
  with pytest.raises(error, match=match):
    tok.encode(images)


@pytest.mark.parametrize('codes,error,match', [
    (np.full((1, 273), 4096), ValueError, r'\[0, 4096\), got values in \[4096, 4096\]'),
    (np.full((1, 273), -1), ValueError, r'\[0, 4096\)'),
    (np.zeros((1, 272), np.int32), ValueError, r'shape \[B, 273\]'),
    (np.zeros((1, 273), np.float32), TypeError, 'integers'),
])
def test_bad_codes_are_refused_clearly(tok, gen, codes, error, match):
  with pytest.raises(error, match=match):
    tok.decode(codes)
  with pytest.raises(error, match=match):
    gen.logits(codes, np.zeros(codes.shape[0], np.int32))


@pytest.mark.parametrize('labels,error,match', [
    (np.array([1000, 3]), ValueError, r'\[0, 1000\).*labels=None'),
    (np.array([-1, 3]), ValueError, r'\[0, 1000\)'),
    (np.array([1, 2, 3]), ValueError, r'shape \[2\]'),
    (np.array([1.0, 2.0]), TypeError, 'integers'),
])
def test_bad_labels_are_refused_clearly(gen, labels, error, match):
  with pytest.raises(error, match=match):
    gen.logits(np.zeros((2, 273), np.int32), labels)


def test_params_must_match_config():
  params = Generator.random(variants.AR['tiny']).params
  params['norm']['weight'] = np.ones(7, np.float32)
  with pytest.raises(ValueError, match=r'norm.weight has shape \[7\], expected \[128\]'):
    Generator(variants.AR['tiny'], params)
  with pytest.raises(TypeError, match='needs a TokenizerConfig'):
    Tokenizer(variants.AR['tiny'], params)


def test_bfloat16_compute_stays_close(model_dirs):
  io = load_io('ar')
  gen = Generator.load(model_dirs['ar'], dtype='bfloat16')
  logits = np.asarray(gen.logits(io['ids'], io['labels']))
  # bf16 keeps ~3 significant digits; the fixture's logits have std ~20.
  assert np.abs(logits - io['logits']).mean() < 0.05 * np.abs(io['logits']).mean()
  with pytest.raises(ValueError, match='compute dtype'):
    Generator.load(model_dirs['ar'], dtype='int8')
