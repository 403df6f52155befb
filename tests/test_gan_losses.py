"""The discriminator, the GAN hinge losses and the perceptual loss."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import pathlib
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alitok_jax import checkpoint
from alitok_jax.convert import convnext as convnext_keys
from alitok_jax.convert import state_dict
from alitok_jax.losses import gan, perceptual
from alitok_jax.models import build, variants
from alitok_jax.models.discriminator import (
    DISCRIMINATOR, ConvSame, Discriminator, DiscriminatorConfig, DiscriminatorStage,
    adaptive_max_pool, blur_downsample, same_padding)

_apply = jax.jit(lambda graphdef, params, x: nnx.merge(graphdef, params)(x), static_argnums=0)


def _numpy_params(cfg, seed: int = 0):
  """Random parameters of the right shapes, made in numpy (no per-shape init compiles)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: rng.normal(0, 0.05, a.shape).astype(np.float32),
                      build.abstract_params(cfg))


# --- discriminator ----------------------------------------------------------------------------


def test_discriminator_output_shape_and_size():
  cfg = DISCRIMINATOR['tiny']
  graphdef, params = build.abstract(cfg)[0], _numpy_params(cfg)
  images = np.random.default_rng(0).random((2, 256, 256, 3), np.float32)
  logits = _apply(graphdef, params, jnp.asarray(images))
  assert logits.shape == (2, 16, 16, 1) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all() and np.asarray(logits).std() > 0
  # The reference's size, from shapes alone: 128 -> 128 -> 256 -> 512 channels, 1,909,889 params.
  ref_cfg = DISCRIMINATOR['reference']
  assert ref_cfg.channels == (128, 128, 256, 512)
  ref_graphdef, ref_state = build.abstract(ref_cfg)
  out = jax.eval_shape(lambda s, x: nnx.merge(ref_graphdef, s)(x), ref_state,
                       jax.ShapeDtypeStruct((3, 256, 256, 3), jnp.float32))
  assert out.shape == (3, 16, 16, 1)
  assert build.count_params(ref_cfg) == 1_909_889
  # Other input sizes still give the 16 x 16 map (adaptive pooling), odd sizes included.
  odd = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), params,
                       jax.ShapeDtypeStruct((1, 72, 45, 3), jnp.float32))
  assert odd.shape == (1, 16, 16, 1)


def test_discriminator_config_checks_groups():
  with pytest.raises(ValueError, match='divisible'):
    DiscriminatorConfig(hidden_channels=16, num_groups=32)
  cfg = DiscriminatorConfig(hidden_channels=16, num_groups=4, blur_kernel=[1, 3, 3, 1])
  assert cfg == DISCRIMINATOR['tiny'] and hash(cfg) == hash(DISCRIMINATOR['tiny'])
  assert DiscriminatorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@jax.jit
def _init_samples():
  """Freshly initialised layers of the discriminator (one compile instead of many eager ops)."""
  conv = ConvSame(3, 16, 5, dtype=jnp.float32, rngs=nnx.Rngs(1)).conv
  stage = DiscriminatorStage(32, 64, DISCRIMINATOR['tiny'], dtype=jnp.float32, rngs=nnx.Rngs(2))
  return (conv.kernel[...], conv.bias[...], stage.conv.conv.kernel[...], stage.norm.scale[...],
          stage.norm.bias[...])


def test_discriminator_uses_torch_default_init():
  kernel, bias, stage_kernel, scale, shift = map(np.asarray, _init_samples())
  bound = 1 / math.sqrt(75)  # fan_in 5 * 5 * 3
  assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
  assert abs(kernel.std() - bound / math.sqrt(3)) < 0.1 * bound  # uniform in +-bound
  assert abs(bias.std() - bound / math.sqrt(3)) < 0.5 * bound
  assert np.abs(stage_kernel).max() <= 1 / math.sqrt(9 * 32)  # fan_in 3 * 3 * 32
  np.testing.assert_array_equal(scale, np.ones(64, np.float32))
  np.testing.assert_array_equal(shift, np.zeros(64, np.float32))


def test_same_padding_and_blur():
  assert same_padding(256, 5, 1) == (2, 2) and same_padding(256, 1, 1) == (0, 0)
  assert same_padding(256, 4, 2) == (1, 1) and same_padding(65, 4, 2) == (1, 2)
  x = jnp.full((1, 10, 9, 2), 3.0)
  y = np.asarray(blur_downsample(x, (1, 3, 3, 1)))
  assert y.shape == (1, 5, 5, 2)
  np.testing.assert_allclose(y[0, 1:-1, 1:-1], 3.0, rtol=1e-6)  # normalised kernel
  assert y[0, 0, 0, 0] < 3.0  # zero padding at the border


_pool = jax.jit(adaptive_max_pool, static_argnums=1)


@pytest.mark.parametrize('n,size', [(32, 16), (8, 16), (7, 3), (17, 16)])
def test_adaptive_max_pool_windows(n, size):
  x = np.random.default_rng(n).normal(size=(2, n, n + 1, 3)).astype(np.float32)
  got = np.asarray(_pool(jnp.asarray(x), size))
  want = np.empty((2, size, size, 3), np.float32)
  for i in range(size):
    for j in range(size):
      rows = slice(i * n // size, -(-(i + 1) * n // size))
      cols = slice(j * (n + 1) // size, -(-(j + 1) * (n + 1) // size))
      want[:, i, j] = x[:, rows, cols].max(axis=(1, 2))
  np.testing.assert_array_equal(got, want)


# --- GAN losses -------------------------------------------------------------------------------


def test_hinge_and_generator_losses_on_constructed_logits():
  real = jnp.asarray([2.0, 0.5, -1.0, 1.0]).reshape(1, 2, 2, 1)  # relu(1 - x): 0, .5, 2, 0
  fake = jnp.asarray([-2.0, 0.0, 1.0, -0.5]).reshape(1, 2, 2, 1)  # relu(1 + x): 0, 1, 2, .5
  hinge = 0.5 * (2.5 / 4 + 3.5 / 4)
  np.testing.assert_allclose(gan.hinge_d_loss(real, fake), hinge, rtol=1e-6)
  np.testing.assert_allclose(gan.generator_adversarial_loss(fake), 0.375, rtol=1e-6)
  # The reference's weights: D step 0.1 * hinge; generator GAN term 0.05 * 0.1 * -mean(D(recon)).
  np.testing.assert_allclose(gan.discriminator_step_loss(real, fake), 0.1 * hinge, rtol=1e-6)
  np.testing.assert_allclose(gan.generator_gan_term(fake), 0.005 * 0.375, rtol=1e-6)
  np.testing.assert_allclose(gan.generator_gan_term(fake, discriminator_weight=1.0), 0.1 * 0.375,
                             rtol=1e-6)
  # A perfect discriminator (real >= 1, fake <= -1) has zero hinge loss.
  assert float(gan.hinge_d_loss(jnp.full((2, 4), 1.5), jnp.full((2, 4), -3.0))) == 0.0
  assert gan.gan_enabled(10, 10) and not gan.gan_enabled(9, 10)


# --- perceptual loss --------------------------------------------------------------------------


@pytest.fixture(scope='module')
def perceptual_net(fixtures_dir):
  """(graphdef, params) of the tiny random ConvNeXt fixture."""
  sd = state_dict.read_state_dict(fixtures_dir / 'convnext_tiny_random.pth')
  config = convnext_keys.infer_config(sd)
  params = convnext_keys.key_table(config).to_params(sd, build.abstract_params(config))
  return build.abstract(config)[0], jax.tree.map(jnp.asarray, params)


@functools.lru_cache
def _loss_fn(graphdef):
  def loss(params, x, y):
    return perceptual.perceptual_loss(nnx.merge(graphdef, params), x, y)

  return jax.jit(jax.value_and_grad(loss, argnums=2))


def test_perceptual_loss_zero_for_identical_positive_otherwise(perceptual_net):
  graphdef, params = perceptual_net
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((2, 256, 256, 3), np.float32))
  y = jnp.clip(x + 0.1 * jnp.asarray(rng.normal(size=x.shape), jnp.float32), 0, 1)
  loss_grad = _loss_fn(graphdef)
  same, grad_same = loss_grad(params, x, x)
  assert float(same) == 0.0 and not np.asarray(grad_same).any()
  diff, grad = loss_grad(params, x, y)
  assert float(diff) > 0 and np.isfinite(np.asarray(grad)).all() and np.abs(grad).max() > 0
  # It is the mean over batch and classes of the squared logit difference.
  logits = np.asarray(_apply(graphdef, params, perceptual.preprocess(jnp.concatenate([x, y]))))
  assert logits.shape == (4, 1000)
  np.testing.assert_allclose(diff, np.mean((logits[:2] - logits[2:]) ** 2), rtol=1e-5)


def test_preprocess_resizes_and_normalises():
  mean_image = jnp.broadcast_to(jnp.asarray(perceptual.IMAGENET_MEAN), (1, 256, 256, 3))
  out = perceptual.preprocess(mean_image)
  assert out.shape == (1, 224, 224, 3) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, 0.0, atol=1e-6)
  white = perceptual.preprocess(jnp.ones((1, 224, 224, 3), jnp.bfloat16))  # no resize needed
  np.testing.assert_allclose(white[0, 0, 0], (1 - np.array(perceptual.IMAGENET_MEAN))
                             / np.array(perceptual.IMAGENET_STD), rtol=1e-6)
  with pytest.raises(ValueError, match='NHWC'):
    perceptual.preprocess(jnp.zeros((1, 3, 256, 256)))


def test_load_perceptual_net_errors(tmp_path):
  for missing in (tmp_path / 'nope', tmp_path):
    with pytest.raises(perceptual.PerceptualWeightsMissing) as e:
      perceptual.load_perceptual_net(missing)
    assert 'convnext_small-0c510722.pth' in str(e.value)
    assert f'python -m alitok_jax.convert convnext_small-0c510722.pth {missing}' in str(e.value)
  other = tmp_path / 'ar'
  other.mkdir()
  (other / 'config.json').write_text(json.dumps(
      {'format': checkpoint.FORMAT_VERSION, 'model': variants.AR['tiny'].to_dict()}))
  with pytest.raises(checkpoint.CheckpointError, match='holds a ar model, not the ConvNeXt'):
    perceptual.load_perceptual_net(other)


# --- against PyTorch (opt-in) -----------------------------------------------------------------


@pytest.mark.torch
def test_resize_and_perceptual_loss_match_torch(perceptual_net):
  torch = pytest.importorskip('torch')
  import torch.nn.functional as F  # noqa: PLC0415, N812

  rng = np.random.default_rng(1)
  x = rng.random((2, 3, 256, 256), np.float32)
  y = np.clip(x + 0.05 * rng.normal(size=x.shape), 0, 1).astype(np.float32)

  def torch_pre(a):  # what the reference's PerceptualLoss.forward does before the network
    r = F.interpolate(torch.from_numpy(a), size=224, mode='bilinear', align_corners=False,
                      antialias=True)
    mean = torch.tensor(perceptual.IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(perceptual.IMAGENET_STD)[None, :, None, None]
    return ((r - mean) / std).numpy().transpose(0, 2, 3, 1)

  ours = np.asarray(perceptual.preprocess(jnp.asarray(x.transpose(0, 2, 3, 1))))
  assert np.abs(ours - torch_pre(x)).max() < 5e-6
  graphdef, params = perceptual_net
  logits = np.asarray(_apply(graphdef, params, jnp.asarray(np.concatenate([torch_pre(x),
                                                                           torch_pre(y)]))))
  want = np.mean((logits[:2] - logits[2:]) ** 2)
  got, _ = _loss_fn(graphdef)(params, jnp.asarray(x.transpose(0, 2, 3, 1)),
                             jnp.asarray(y.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.torch
@pytest.mark.parametrize('n,size', [(32, 16), (8, 16), (7, 3), (17, 16)])
def test_adaptive_max_pool_matches_torch(n, size):
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(0).normal(size=(2, 3, n, n + 3)).astype(np.float32)
  want = torch.nn.AdaptiveMaxPool2d((size, size))(torch.from_numpy(x)).numpy()
  got = np.asarray(_pool(jnp.asarray(x.transpose(0, 2, 3, 1)), size))
  np.testing.assert_array_equal(got, want.transpose(0, 2, 3, 1))


def _reference_discriminator_module(tmp_path: pathlib.Path):
  """The reference's `train_tokenizer/loss/discriminator.py`, imported from ALITOK_REFERENCE.

  ALITOK_REFERENCE is a checkout of github.com/ali-vilab/alitok, or a bare git directory of it
  (the file is then extracted with `git archive`).
  """
  root = os.environ.get('ALITOK_REFERENCE')
  rel = 'train_tokenizer/loss/discriminator.py'
  if not root:
    pytest.skip('set ALITOK_REFERENCE to a checkout (or bare git dir) of ali-vilab/alitok')
  path = pathlib.Path(root, rel)
  if not path.is_file():
    if not pathlib.Path(root, 'HEAD').is_file():
      pytest.skip(f'ALITOK_REFERENCE={root} is neither a checkout nor a git directory')
    out = tmp_path / 'reference'
    out.mkdir()
    archive = subprocess.run(['git', f'--git-dir={root}', 'archive', 'HEAD', rel],
                             capture_output=True, check=True).stdout
    subprocess.run(['tar', '-x', '-C', str(out)], input=archive, check=True)
    path = out / rel
  spec = importlib.util.spec_from_file_location('reference_discriminator', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _copy_reference_weights(ref, cfg: DiscriminatorConfig):
  """Our params from the reference module's state dict, through a small key table."""
  sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}

  def conv(prefix):
    return {'conv': {'kernel': sd.pop(f'{prefix}.weight').transpose(2, 3, 1, 0),
                     'bias': sd.pop(f'{prefix}.bias')}}

  params = {'block_in': conv('block_in.0'), 'blocks': {},
            'head_hidden': conv('to_logits.0'), 'head_out': conv('to_logits.2')}
  taps = np.asarray(cfg.blur_kernel, np.float32)
  for i in range(cfg.num_stages):
    params['blocks'][i] = {'conv': conv(f'blocks.{i}.0'),
                           'norm': {'scale': sd.pop(f'blocks.{i}.2.weight'),
                                    'bias': sd.pop(f'blocks.{i}.2.bias')}}
    blur = sd.pop(f'blocks.{i}.1.kernel')  # a buffer: the fixed blur kernel we build ourselves
    np.testing.assert_allclose(blur[0, 0], np.outer(taps, taps) / np.outer(taps, taps).sum())
  assert not sd, f'reference keys left unmapped: {sorted(sd)}'
  return params


def _discriminator_parity(tmp_path, hidden, shape):
  torch = pytest.importorskip('torch')
  module = _reference_discriminator_module(tmp_path)
  torch.manual_seed(0)
  ref = module.NLayerDiscriminator(hidden_channels=hidden).eval()
  with torch.no_grad():  # default init leaves GroupNorm at 1 / 0: perturb it
    for name, p in ref.named_parameters():
      if '.2.' in name and name.startswith('blocks'):
        p.add_(torch.randn_like(p) * 0.2)
  cfg = DiscriminatorConfig(hidden_channels=hidden)  # the reference's GroupNorm(32)
  params = _copy_reference_weights(ref, cfg)
  build.check_params(cfg, params)
  x = np.random.default_rng(0).random(shape, np.float32)  # NCHW in [0, 1]
  with torch.no_grad():
    want = ref(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
  got = np.asarray(_apply(build.abstract(cfg)[0], params, jnp.asarray(x.transpose(0, 2, 3, 1))))
  assert got.shape == want.shape == (shape[0], 16, 16, 1)
  rel = np.abs(got - want).max() / np.abs(want).max()
  print(f'discriminator hidden {hidden} input {shape}: max abs diff '
        f'{np.abs(got - want).max():.3g}, max abs logit {np.abs(want).max():.3g}, rel {rel:.3g}')
  assert rel < 1e-5, rel


@pytest.mark.torch
def test_reference_discriminator_parity_small_odd_input(tmp_path):
  _discriminator_parity(tmp_path, hidden=32, shape=(2, 3, 70, 45))


@pytest.mark.torch
def test_reference_discriminator_parity_full_size(tmp_path):
  _discriminator_parity(tmp_path, hidden=128, shape=(2, 3, 256, 256))


def test_discriminator_module_class_is_built_from_config():
  assert isinstance(nnx.eval_shape(lambda: build.create(DISCRIMINATOR['tiny'])), Discriminator)
