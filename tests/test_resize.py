"""A checkpoint at another image size (issue 16): interpolation exactness, what is copied, the
command line from .pth and from model directories, the AR model's config-only change, and the
converted 512 tokenizer encoding 512 images to 1,057 codes and back."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from alitok_jax import Generator, Tokenizer, checkpoint, tree_util
from alitok_jax.commands import convert as cli
from alitok_jax.convert import resize
from alitok_jax.convert.run import load_model_dir_numpy
from alitok_jax.models import build, variants


def _bilinear_axis(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] weights of 1D linear resizing with align_corners=False (pixel centres at
  (i + 0.5) / n), the source position clamped to the edge pixels: the textbook definition,
  written out directly (torch's F.interpolate(..., align_corners=False) for upsampling)."""
  w = np.zeros((n_out, n_in), np.float64)
  for i in range(n_out):
    src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
    lo = int(np.floor(src))
    hi = min(lo + 1, n_in - 1)
    frac = src - lo
    w[i, lo] += 1 - frac
    w[i, hi] += frac
  return w


@pytest.mark.parametrize('g, new_g', [(16, 32), (8, 16), (5, 7), (4, 4)])
def test_grid_interpolation_equals_the_direct_bilinear_formula(g, new_g):
  x = np.random.default_rng(g).normal(size=(g * g, 6)).astype(np.float32)
  wy = wx = _bilinear_axis(g, new_g)
  expected = np.einsum('ia,jb,abd->ijd', wy, wx, x.astype(np.float64).reshape(g, g, 6))
  got = resize.interpolate_grid(x, new_g)
  assert got.shape == (new_g * new_g, 6) and got.dtype == np.float32
  # float32 rounding only: the weights are exact in binary at 2x (0.25, 0.75), not at 7 / 5
  np.testing.assert_allclose(got, expected.reshape(-1, 6), rtol=0,
                             atol=1e-6 if new_g % g == 0 else 5e-6)
  if g == new_g:
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize('n, new_n', [(17, 33), (9, 17), (3, 8)])
def test_prefix_interpolation_equals_the_direct_linear_formula(n, new_n):
  x = np.random.default_rng(n).normal(size=(n, 5)).astype(np.float32)
  expected = _bilinear_axis(n, new_n) @ x.astype(np.float64)
  np.testing.assert_allclose(resize.interpolate_1d(x, new_n), expected, rtol=0, atol=5e-6)


def test_a_linear_field_stays_linear():
  """Positions that vary linearly over the grid are reproduced at the new pixel centres."""
  g, new_g = 16, 32
  centres = lambda n: (np.arange(n) + 0.5) / n  # in image coordinates
  yy, xx = np.meshgrid(centres(g), centres(g), indexing='ij')
  field = np.stack([3 * yy - 2 * xx, yy + 1], -1).reshape(-1, 2).astype(np.float32)
  got = resize.interpolate_grid(field, new_g).reshape(new_g, new_g, 2)
  ny, nx = np.meshgrid(centres(new_g), centres(new_g), indexing='ij')
  inner = slice(1, -1)  # the outermost new centres lie beyond the old ones: clamped there
  np.testing.assert_allclose(got[inner, inner, 0], (3 * ny - 2 * nx)[inner, inner], atol=1e-5)
  np.testing.assert_allclose(got[inner, inner, 1], (ny + 1)[inner, inner], atol=1e-5)


@pytest.mark.parametrize('name', ['tiny_stage1', 'tiny_stage2', 'demo_stage1'])
def test_tokenizer_resize_interpolates_the_four_tensors_and_copies_the_rest(name):
  cfg = variants.TOKENIZER[name]
  size = 2 * cfg.image_size
  params = jax.tree.map(np.asarray, build.random_params(cfg, seed=3))
  new_cfg, new, changed = resize.resize_tokenizer_params(cfg, params, size)
  g, big = cfg.grid_size, new_cfg.grid_size
  assert (new_cfg.image_size, new_cfg.grid_size, new_cfg.prefix_tokens) == (size, 2 * g, 1 + 2 * g)
  assert new_cfg.num_latent_tokens == 1 + 2 * g + 4 * g * g
  assert changed == ['decoder.latent_token_positional_embedding',
                     'encoder.latent_token_positional_embedding', 'encoder.positional_embedding',
                     'latent_tokens']
  build.check_params(new_cfg, new)  # every shape is the 512 model's
  old_flat, new_flat = tree_util.flatten(params), tree_util.flatten(new)
  for path, value in old_flat.items():
    if '.'.join(map(str, path)) not in changed:
      np.testing.assert_array_equal(new_flat[path], value, err_msg=str(path))
  p = cfg.prefix_tokens
  np.testing.assert_array_equal(new['encoder']['positional_embedding'],
                                resize.interpolate_grid(params['encoder']['positional_embedding'],
                                                        big))
  for rows_old, rows_new, buffers in (
      (params['latent_tokens'], new['latent_tokens'], 0),
      (params['encoder']['latent_token_positional_embedding'],
       new['encoder']['latent_token_positional_embedding'], 0),
      (params['decoder']['latent_token_positional_embedding'],
       new['decoder']['latent_token_positional_embedding'], cfg.buffer_tokens)):
    np.testing.assert_array_equal(rows_new[:buffers], rows_old[:buffers])  # buffers copied
    np.testing.assert_array_equal(rows_new[buffers:buffers + 1 + big],
                                  resize.interpolate_1d(rows_old[buffers:buffers + p], 1 + big))
    np.testing.assert_array_equal(rows_new[buffers + 1 + big:],
                                  resize.interpolate_grid(rows_old[buffers + p:], big))


def test_converted_512_tokenizer_encodes_1057_codes_and_decodes_512_images(fixtures_dir,
                                                                            tmp_path, capsys):
  heads = ['--encoder-heads=4', '--decoder-heads=4']
  assert cli.main([str(fixtures_dir / 'tokenizer.pth'), str(tmp_path / 't512'),
                   '--image-size=512', *heads]) == 0
  out = capsys.readouterr().out
  assert '256 -> 512 pixels, 273 -> 1057 codes' in out and 'every other tensor copied' in out
  # The same from a model directory.
  assert cli.main([str(fixtures_dir / 'tokenizer.pth'), str(tmp_path / 't256'), *heads]) == 0
  assert cli.main([str(tmp_path / 't256'), str(tmp_path / 't512b'), '--image-size=512']) == 0
  cfg_a, params_a, _ = load_model_dir_numpy(tmp_path / 't512')
  cfg_b, params_b, _ = load_model_dir_numpy(tmp_path / 't512b')
  assert cfg_a == cfg_b and cfg_a.num_latent_tokens == 1057 and cfg_a.prefix_tokens == 33
  jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
  doc = checkpoint.load_config(tmp_path / 't512b')[1]
  assert doc['resized_from']['image_size'] == 256 and doc['converted_from'] == 'tokenizer.pth'

  tok = Tokenizer.load(tmp_path / 't512')
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 512, 512, 3), dtype=np.uint8)
  codes = np.asarray(tok.encode(images))
  assert codes.shape == (2, 1057) and codes.min() >= 0 and codes.max() < 4096
  decoded = np.asarray(tok.decode(codes))
  assert decoded.shape == (2, 512, 512, 3) and np.isfinite(decoded).all()
  assert 0 <= decoded.min() and decoded.max() <= 1


def test_ar_resize_rewrites_the_config_only_and_samples_1057_codes(fixtures_dir, tmp_path,
                                                                   capsys):
  assert cli.main([str(fixtures_dir / 'ar.pth'), str(tmp_path / 'a256')]) == 0
  assert cli.main([str(tmp_path / 'a256'), str(tmp_path / 'a512'), '--image-size=512']) == 0
  assert 'no tensor changes (RoPE is computed' in capsys.readouterr().out
  cfg256, p256, _ = load_model_dir_numpy(tmp_path / 'a256')
  cfg512, p512, _ = load_model_dir_numpy(tmp_path / 'a512')
  assert (cfg512.image_seq_len, cfg512.prefix_tokens, cfg512.grid_size) == (1057, 33, 32)
  assert cfg512 == variants.sized(cfg256, image_size=512)
  jax.tree.map(np.testing.assert_array_equal, p256, p512)
  gen = Generator.load(tmp_path / 'a512')
  codes = np.asarray(gen.sample(np.array([3, 917]), 4.0, 1.4, seed=0))
  assert codes.shape == (2, 1057) and codes.max() < 4096


def test_resize_refuses_what_it_cannot_do(fixtures_dir, tmp_path, capsys):
  assert cli.main([str(fixtures_dir / 'ar.pth'), str(tmp_path / 'a')]) == 0
  capsys.readouterr()
  assert cli.main([str(fixtures_dir / 'tokenizer.pth'), str(tmp_path / 'x'), '--image-size=500',
                   '--encoder-heads=4', '--decoder-heads=4']) == 2
  err = capsys.readouterr().err.strip()
  assert err == "error: --image-size=500 is not a multiple of the tokenizer's 16-pixel patches"
  with pytest.raises(SystemExit):  # argparse: a bad command line
    cli.main([str(tmp_path / 'a'), str(tmp_path / 'y'), '--image-size=0'])
  assert not (tmp_path / 'x').exists() and not (tmp_path / 'y').exists()
  json.loads((tmp_path / 'a' / 'config.json').read_text())  # the source is untouched
