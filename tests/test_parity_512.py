"""Parity at 512 x 512 with the reference PyTorch code: 32 x 32 grid, 33 prefix tokens, 1057 codes.

The fixtures (tests/fixtures/alitok512_*, README_512.md) are tiny random models run through the
reference code with its 256-pixel constants patched (tools/make_fixtures_512.py). The tokenizers
convert with the converter as released weights do; the AR model's sequence length cannot be read
off its weights (RoPE is computed), so its config is given here. Tolerances as in test_parity.py:
identical codes; continuous outputs within RTOL of the output's scale (max |ref|).
"""

from __future__ import annotations

import functools

import conftest
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import nchw_to_nhwc
from flax import nnx

from alitok_jax import Generator, Tokenizer
from alitok_jax.convert.run import torch_to_model_dir
from alitok_jax.models import ar as ar_lib
from alitok_jax.models import rope
from alitok_jax.models import tokenizer as tokenizer_lib
from alitok_jax.models.variants import ARConfig

FIXTURES = conftest.REPO / 'tests' / 'fixtures'
RTOL = 1e-4
GRID, PREFIX, LATENT = 32, 33, 1057
GUIDANCE, POWER = 4.0, 1.4  # the fixture's CFG settings (alitok512_ar.json)
AR_CONFIG = ARConfig(width=64, depth=2, heads=4, image_seq_len=LATENT, prefix_tokens=PREFIX)
FIRST_LOWER_HALF = 1 + PREFIX + 16 * GRID  # 546: the first position of grid row 16

# Largest relative error of each check (printed at the end with -s; the numbers in the report).
ERRORS: dict[str, float] = {}


def rel_error(actual, expected) -> float:
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, (actual.shape, expected.shape)
  return float(np.abs(actual - expected).max() / np.abs(expected).max())


def assert_close(actual, expected, what: str):
  err = rel_error(actual, expected)
  ERRORS[what] = max(err, ERRORS.get(what, 0.0))
  assert err <= RTOL, f'{what}: max error {err:.3g} x scale > {RTOL}'


@pytest.fixture(scope='module', autouse=True)
def _report_errors():
  yield
  if ERRORS:
    print('\n512 parity, max relative error per check:')
    for what, err in ERRORS.items():
      print(f'  {what}: {err:.2e}')


def load_io(name: str) -> dict[str, np.ndarray]:
  with np.load(FIXTURES / f'alitok512_{name}_io.npz') as f:
    return dict(f)


@functools.cache
def _tool():
  return conftest.tool_module('make_fixtures_512')


@pytest.fixture(scope='module')
def images() -> np.ndarray:
  """The fixture's input image, uint8 [1, 512, 512, 3], regenerated from its seed."""
  io = load_io('tokenizer')
  x = _tool().fixture_image(int(io['image_seed']))
  assert _tool().image_sha1(x) == str(io['image_sha1']), 'fixture_image no longer makes the input'
  return x


@pytest.fixture(scope='module')
def tokenizers(tmp_path_factory) -> dict[str, Tokenizer]:
  root = tmp_path_factory.mktemp('model_dirs_512')
  out = {}
  for name in ('tokenizer', 'stage1'):
    torch_to_model_dir(FIXTURES / f'alitok512_{name}.pth', root / name, **conftest.FIXTURE_HEADS)
    out[name] = Tokenizer.load(root / name)
  return out


@pytest.fixture(scope='module')
def gen(tmp_path_factory) -> Generator:
  """The AR fixture as a user converts it: `python -m alitok_jax.convert ar.pth DST
  --image-size=512` (its weights say nothing of the sequence length)."""
  path = tmp_path_factory.mktemp('ar_512') / 'ar'
  torch_to_model_dir(FIXTURES / 'alitok512_ar.pth', path, image_size=512)
  generator = Generator.load(path)
  assert generator.config == AR_CONFIG
  return generator


def _pixels(decoded_nhwc, io) -> dict[str, np.ndarray]:
  """Ours [B, 512, 512, 3] in the fixture's stored form: pixels at pixel_index, patch means."""
  x = np.asarray(decoded_nhwc).transpose(0, 3, 1, 2)  # NCHW
  return {'pixels': x.reshape(*x.shape[:2], -1)[:, :, io['pixel_index']],
          'patch_mean': _tool().patch_means(x)}


def test_converted_tokenizer_configs(tokenizers):
  for name, stage in (('tokenizer', 2), ('stage1', 1)):
    cfg = tokenizers[name].config
    assert (cfg.stage, cfg.image_size, cfg.grid_size, cfg.prefix_tokens) == (stage, 512, GRID,
                                                                             PREFIX)
    assert cfg.num_latent_tokens == LATENT


@pytest.mark.parametrize('name', ['tokenizer', 'stage1'])
def test_tokenizer_encode_matches_reference(tokenizers, images, name):
  io = load_io(name)
  tok = tokenizers[name]
  assert io['code_margin'].min() > 0.01  # no argmin can flip on float noise
  np.testing.assert_array_equal(np.asarray(tok.encode(images)), io['codes'])
  # encoded: [B, C, 1, L] in the reference layout.
  assert_close(tok.latents(images), io['encoded'][:, :, 0].transpose(0, 2, 1),
               f'{name} encoder output')


@pytest.mark.parametrize('name', ['tokenizer', 'stage1'])
def test_tokenizer_decode_matches_reference(tokenizers, name):
  io = load_io(name)
  ours = _pixels(tokenizers[name].decode(io['codes']), io)
  assert_close(ours['pixels'], io['decoded_pixels'], f'{name} decoded pixels')
  assert_close(ours['patch_mean'], io['decoded_patch_mean'], f'{name} decoded patch means')


def test_stage1_prefix_head_and_quantizer_loss_match_reference(tokenizers, images):
  io = load_io('stage1')
  tok = tokenizers['stage1']
  graphdef = tok.graphdef

  @jax.jit
  def forward(params, x):
    recon, prefix, q = nnx.merge(graphdef, params)(x)
    return recon, prefix, q.codes, q.loss

  x = images.astype(np.float32) / np.float32(255.0)
  recon, prefix, codes, loss = forward(tok.params, x)
  np.testing.assert_array_equal(np.asarray(codes), io['codes'])
  ours = _pixels(recon, io)
  assert_close(ours['pixels'], io['decoded_pixels'], 'stage1 reconstruction pixels')
  assert_close(ours['patch_mean'], io['decoded_patch_mean'], 'stage1 reconstruction patch means')
  assert io['decoded_prefix'].shape == (1, 3, 16, 16 * PREFIX)
  assert_close(prefix, nchw_to_nhwc(io['decoded_prefix']), 'stage1 prefix head output')
  assert_close(loss, io['quantizer_loss'], 'stage1 quantizer loss')


def test_prefix_target_layout_512(images):
  x = images.astype(np.float32) / np.float32(255.0)
  target = np.asarray(tokenizer_lib.prefix_target(x))
  assert target.shape == (1, 16, 16 * PREFIX, 3)
  np.testing.assert_array_equal(target[:, :, :16], x[:, :16, :16])
  np.testing.assert_array_equal(target[:, :, 16:], x[:, :16, :])


def _check_logits(ours: np.ndarray, io: dict, tag: str, what: str) -> None:
  """Ours [B, 1058, 4096] against the stored summaries of the reference's logits."""
  pos, cols = io['positions'].astype(np.int64), io['columns'].astype(np.int64)
  assert_close(ours[:, pos][:, :, cols], io[f'{tag}_slice'], f'{what} (position x column slice)')
  assert_close(ours.max(-1), io[f'{tag}_max'], f'{what} max over the vocabulary')
  lse = jax.nn.logsumexp(jnp.asarray(ours, jnp.float32), axis=-1)
  assert_close(lse, io[f'{tag}_lse'], f'{what} logsumexp')
  # Our logit at the reference's argmax is the reference's max (robust to near-ties).
  at_ref_argmax = np.take_along_axis(ours, io[f'{tag}_argmax'][..., None].astype(np.int64), -1)
  assert_close(at_ref_argmax[..., 0], io[f'{tag}_max'], f'{what} at the reference argmax')


@pytest.mark.parametrize('conditional', [True, False])
def test_ar_logits_match_reference(gen, conditional):
  io = load_io('ar')
  labels = io['labels'] if conditional else None
  ours = np.asarray(gen.logits(io['ids'], labels))
  assert ours.shape == (2, LATENT + 1, 4096)
  tag = 'logits' if conditional else 'logits_uncond'
  _check_logits(ours, io, tag, f'AR {"conditional" if conditional else "unconditional"} logits')


def test_top_k_1_reproduces_reference_greedy_codes(gen):
  io = load_io('ar')
  assert io['greedy_gap'].min() > 0.01  # every greedy step won by a clear margin
  codes = gen.sample(io['labels'], GUIDANCE, POWER, top_k=1, seed=123)
  assert codes.shape == (2, LATENT)
  np.testing.assert_array_equal(np.asarray(codes), io['greedy_ids'])


def _tiled_rows_table(cos, sin):
  """The 512 table, but grid rows 16..31 rotate like rows 0..15 (a 16-row table repeated)."""
  cos, sin = cos.copy(), sin.copy()
  quarter = cos.shape[1] // 2  # the first H/4 pairs carry the row angle
  lower = np.arange(FIRST_LOWER_HALF, 1 + LATENT)
  cos[lower, :quarter] = cos[lower - 16 * GRID, :quarter]
  sin[lower, :quarter] = sin[lower - 16 * GRID, :quarter]
  return cos, sin


def _start_17_table(cos, sin):
  """The reference with its 2D start left at 17 (precompute_freqs_cis_2d(17, 32, ...))."""
  c17, s17 = rope.rope_table(AR_CONFIG.head_dim, 17, GRID, AR_CONFIG.rope_base)
  return (np.concatenate([cos[:1 + PREFIX], c17[1 + 17:]]),
          np.concatenate([sin[:1 + PREFIX], s17[1 + 17:]]))


@pytest.mark.parametrize('wrong_table', [_tiled_rows_table, _start_17_table])
def test_fixture_catches_a_wrong_rope_table(gen, monkeypatch, wrong_table):
  """With a RoPE table that is wrong only beyond some position, our logits still match the
  fixture before it and clearly miss it after: the fixture checks the lower grid rows."""
  io = load_io('ar')
  cfg = AR_CONFIG
  cos, sin = wrong_table(*rope.rope_table(cfg.head_dim, cfg.prefix_tokens, cfg.grid_size,
                                          cfg.rope_base))
  assert cos.shape == (1 + LATENT, cfg.head_dim // 2)
  monkeypatch.setattr(ar_lib.ARTransformer, 'rope_tables',
                      lambda self: (jnp.asarray(cos), jnp.asarray(sin)))
  graphdef = gen.graphdef
  logits_fn = jax.jit(lambda params, tokens: nnx.merge(graphdef, params)(tokens)[0])
  tokens = ar_lib.teacher_forced_tokens(jnp.asarray(io['ids']), jnp.asarray(io['labels']), cfg)
  ours = np.asarray(logits_fn(gen.params, tokens))
  first_wrong = FIRST_LOWER_HALF if wrong_table is _tiled_rows_table else 1 + PREFIX
  scale = np.abs(io['logits_max']).max()
  lse_err = np.abs(np.asarray(jax.nn.logsumexp(jnp.asarray(ours), axis=-1)) - io['logits_lse'])
  assert lse_err[:, :first_wrong].max() <= RTOL * scale  # causal: earlier positions unaffected
  # The parity check's tolerance is RTOL x scale (errors with the right table: ~1e-6 x scale).
  wrong = lse_err[:, first_wrong:] > 10 * RTOL * scale
  assert wrong.mean() > 0.8, f'only {wrong.mean():.0%} of the positions after {first_wrong} differ'
  # Also in the stored slices, in every grid row from the first wrong one on.
  pos = io['positions'].astype(np.int64)
  cols = io['columns'].astype(np.int64)
  err = np.abs(ours[:, pos][:, :, cols] - io['logits_slice']).max(axis=(0, 2))
  for row in range((first_wrong - 1 - PREFIX) // GRID, GRID):
    in_row = (pos >= 1 + PREFIX + row * GRID) & (pos < 1 + PREFIX + (row + 1) * GRID)
    assert err[in_row].max() > 10 * RTOL * scale, f'grid row {row} shows no difference'
