"""LPIPS (VGG16 v0.1): the two-file converter, the distance's definition, its use as a loss, and
(opt-in) parity with the `lpips` package."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_torch_legacy import write_legacy

from alitok_jax.convert import __main__ as cli
from alitok_jax.convert import lpips as lpips_keys
from alitok_jax.convert.engine import ConversionError
from alitok_jax.losses import lpips as lpips_loss
from alitok_jax.models import build, lpips
from alitok_jax.models.lpips import LPIPSConfig


@pytest.fixture(scope='module')
def params():
  return lpips_loss.random_params(0)


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(0)
  x = rng.random((3, 32, 32, 3), dtype=np.float32)
  y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
  return x, y


_distance = jax.jit(lpips_loss.lpips_distance)


def _torch_files(tmp_path, params):
  """Random weights as the two original files: torchvision VGG16 (with its classifier) and the
  lpips linear layers, both in the legacy torch.save format the real files use."""
  vgg, lin = lpips_keys.to_state_dicts(params)
  for i in (0, 3, 6):
    vgg[f'classifier.{i}.weight'] = np.zeros((4, 4), np.float32)
    vgg[f'classifier.{i}.bias'] = np.zeros(4, np.float32)
  write_legacy(tmp_path / lpips_keys.VGG16_FILE, vgg)
  write_legacy(tmp_path / lpips_keys.LIN_FILE, lin)
  return tmp_path / lpips_keys.VGG16_FILE, tmp_path / lpips_keys.LIN_FILE


def test_converts_from_two_files_and_gives_the_same_distances(tmp_path, params, images):
  vgg_path, lin_path = _torch_files(tmp_path, params)
  assert cli.main([str(vgg_path), str(lin_path), str(tmp_path / 'lpips')]) == 0
  loaded = lpips_loss.load_params(tmp_path / 'lpips')
  np.testing.assert_array_equal(_distance(loaded, *images), _distance(params, *images))
  # The one-file converter recognises either half and says which command takes both.
  assert cli.main([str(vgg_path), str(tmp_path / 'x')]) == 2
  with pytest.raises(ConversionError,
                     match='python -m alitok_jax.convert vgg16-397923af.pth vgg.pth'):
    from alitok_jax.convert import detect, state_dict  # noqa: PLC0415

    detect.infer_config(state_dict.read_state_dict(lin_path))


def test_converter_is_strict(params):
  vgg, lin = lpips_keys.to_state_dicts(params)
  with pytest.raises(ConversionError, match='missing keys: features.28.bias'):
    lpips_keys.to_params({k: v for k, v in vgg.items() if k != 'features.28.bias'}, lin)
  with pytest.raises(ConversionError, match='unexpected keys: features.30.weight'):
    lpips_keys.to_params({**vgg, 'features.30.weight': np.zeros(1)}, lin)
  with pytest.raises(ConversionError, match=r'lin2.model.1.weight has shape \[1, 128, 1, 1\]'):
    lpips_keys.to_params(vgg, {**lin, 'lin2.model.1.weight': np.zeros((1, 128, 1, 1))})


def test_missing_directory_says_how_to_convert(tmp_path):
  with pytest.raises(FileNotFoundError, match='vgg16-397923af.pth vgg.pth'):
    lpips_loss.load_params(tmp_path / 'nope')


def test_distance_definition(params, images):
  """Recomputes the distance from the VGG taps in numpy: unit-normalise over channels, squared
  difference, per-channel weights, mean over space, sum over the five layers."""
  x, y = images
  model = nnx.merge(build.abstract(LPIPSConfig())[0], params)
  taps = [np.asarray(t, np.float64) for t in model.taps(jnp.concatenate([x, y]))]
  assert [t.shape[1:] for t in taps] == [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512),
                                         (2, 2, 512)]
  want = 0.0
  for k, t in enumerate(taps):
    t = t / (np.sqrt((t**2).sum(-1, keepdims=True)) + 1e-10)
    diff = (t[:3] - t[3:]) ** 2
    want = want + (diff @ np.asarray(params['lins'][k]['kernel'], np.float64)).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(_distance(params, x, y), want, rtol=1e-4)
  # The scaling layer sees [-1, 1] inputs: lpips' constants.
  np.testing.assert_allclose(lpips.SHIFT, [-0.030, -0.088, -0.188])
  np.testing.assert_allclose(lpips.SCALE, [0.458, 0.448, 0.450])


def test_distance_properties_and_gradient(params, images):
  x, y = images
  d = np.asarray(_distance(params, x, y))
  assert d.shape == (3,) and np.all(d > 0)
  np.testing.assert_allclose(_distance(params, x, x), 0.0, atol=1e-7)
  np.testing.assert_allclose(_distance(params, y, x), d, rtol=1e-5)
  grad = jax.jit(jax.grad(lambda r: jnp.sum(lpips_loss.lpips_distance(params, x, r))))(y)
  assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).max()) > 0
  with pytest.raises(ValueError, match='one shape'):
    lpips_loss.lpips_distance(params, x, y[:2])


@pytest.mark.torch
def test_parity_with_the_lpips_package(params, images):
  torch = pytest.importorskip('torch')
  pytest.importorskip('torchvision')
  lpips_pkg = pytest.importorskip('lpips')
  net = lpips_pkg.LPIPS(net='vgg', pretrained=False, pnet_rand=True, verbose=False).eval()
  vgg, lin = lpips_keys.to_state_dicts(params)
  sd = net.state_dict()
  slices = [(1, range(0, 4)), (2, range(4, 9)), (3, range(9, 16)), (4, range(16, 23)),
            (5, range(23, 30))]
  for name, value in vgg.items():
    i = int(name.split('.')[1])
    s = next(s for s, r in slices if i in r)
    sd[f'net.slice{s}.{i}.{name.split(".")[2]}'] = torch.from_numpy(value)
  sd.update({k: torch.from_numpy(v) for k, v in lin.items()})
  net.load_state_dict(sd)
  x, y = images
  with torch.no_grad():
    want = net(torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(y.transpose(0, 3, 1, 2)),
               normalize=True).numpy().reshape(-1)
  with jax.default_matmul_precision('float32'):
    got = np.asarray(lpips_loss.lpips_distance(params, x, y))
  np.testing.assert_allclose(got, want, rtol=1e-5)
