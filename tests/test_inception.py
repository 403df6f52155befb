"""The FID Inception: forward shapes, pytorch-fid's resize and pooling rules, the converter both
ways, and (opt-in) parity with pytorch-fid's own `InceptionV3` on random weights."""

from __future__ import annotations

import numpy as np
import pytest

from alitok_jax import checkpoint, tree_util
from alitok_jax.convert import __main__ as cli
from alitok_jax.convert import detect, run, state_dict, torch_writer
from alitok_jax.convert import inception as inception_keys
from alitok_jax.convert.engine import ConversionError
from alitok_jax.eval import features
from alitok_jax.models import build, inception


@pytest.fixture(scope='module')
def perturbed():
  """Random Inception params with non-trivial BatchNorm statistics and classifier."""
  config, params = features.random_inception(0)
  rng = np.random.default_rng(1)
  flat = tree_util.flatten(params)
  for path, v in flat.items():
    name = str(path[-1])
    if name in ('scale', 'var'):
      flat[path] = rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
    elif name in ('mean', 'bias'):
      flat[path] = (0.1 * rng.standard_normal(v.shape)).astype(np.float32)
    elif path[0] == 'fc':
      flat[path] = (0.05 * rng.standard_normal(v.shape)).astype(np.float32)
  return config, tree_util.unflatten(flat)


@pytest.fixture(scope='module')
def forward(perturbed):
  config, _ = perturbed
  graphdef = build.abstract(config)[0]
  import jax  # noqa: PLC0415

  # pytorch-fid's preprocessing: the parity test below compares with pytorch-fid itself.
  return jax.jit(lambda p, x: features.apply_inception(graphdef, p, x, 'pytorch_fid'))


def test_forward_shapes_and_ranges(perturbed, forward):
  _, params = perturbed
  x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
  out = forward(params, x)
  assert out.pool.shape == (2, 2048) and out.logits.shape == (2, 1008)
  assert out.spatial.shape == (2, 17 * 17 * 7)
  for a in out:
    assert np.isfinite(np.asarray(a)).all()
  assert float(np.min(out.pool)) >= 0.0  # a mean of ReLU outputs
  assert float(np.std(out.pool)) > 0.01  # not degenerate
  # The two images differ, and so do their features; uint8 input means the same as x / 255.
  assert not np.allclose(out.pool[0], out.pool[1])
  u8 = np.round(x * 255).astype(np.uint8)
  np.testing.assert_allclose(forward(params, u8).pool, forward(params, u8 / np.float32(255)).pool,
                             rtol=1e-5, atol=1e-5)


def _torch_bilinear_reference(x: np.ndarray, size: int) -> np.ndarray:
  """Per-pixel torch `F.interpolate(bilinear, align_corners=False)` on [H, W] (no antialias)."""
  h, w = x.shape
  out = np.zeros((size, size))

  def source(i, n_in):
    s = max((i + 0.5) * n_in / size - 0.5, 0.0)
    lo = min(int(s), n_in - 1)
    return lo, min(lo + 1, n_in - 1), s - lo

  for i in range(size):
    y0, y1, fy = source(i, h)
    for j in range(size):
      x0, x1, fx = source(j, w)
      top = x[y0, x0] * (1 - fx) + x[y0, x1] * fx
      bottom = x[y1, x0] * (1 - fx) + x[y1, x1] * fx
      out[i, j] = top * (1 - fy) + bottom * fy
  return out


@pytest.mark.parametrize('shape', [(7, 5), (40, 33)])
def test_resize_matches_torch_bilinear_rule(shape):
  x = np.random.default_rng(0).random(shape)
  got = np.asarray(inception.resize_bilinear(x[None, :, :, None].astype(np.float32), 17))[0, ..., 0]
  np.testing.assert_allclose(got, _torch_bilinear_reference(x, 17), rtol=1e-5, atol=1e-6)
  same = np.ones((1, 299, 299, 3), np.float32)
  assert inception.resize_bilinear(same, 299) is same  # no resampling at 299


def test_average_pool_leaves_padding_out_and_max_pool_ignores_it():
  x = np.full((1, 4, 5, 2), 3.0, np.float32)
  np.testing.assert_allclose(inception.avg_pool_no_pad(x), 3.0)  # corners too (count 4, not 9)
  y = -np.ones((1, 4, 4, 1), np.float32)
  np.testing.assert_allclose(inception.max_pool(y, 1, padding=1), -1.0)  # padding never wins
  assert inception.max_pool(np.zeros((1, 35, 35, 1), np.float32), 2).shape == (1, 17, 17, 1)


def _write_torch_file(path, params, extra=None):
  sd = inception_keys.key_table(params).to_state_dict(params)
  sd.update(extra or {})
  torch_writer.save_torch_state_dict(path, sd)
  return sd


def test_converter_round_trip_and_same_outputs(perturbed, forward, tmp_path):
  config, params = perturbed
  src = tmp_path / inception_keys.WEIGHTS_FILE
  # pytorch-fid's file may carry BatchNorm step counters: they are ignored.
  sd = _write_torch_file(src, params, {'Conv2d_1a_3x3.bn.num_batches_tracked': np.array(0)})
  assert len(sd) == 5 * 94 + 2 + 1  # 94 BasicConv2d (conv + 4 BatchNorm tensors), fc, counter
  assert cli.main([str(src), str(tmp_path / 'inception')]) == 0
  loaded_config, loaded = features.load_inception(tmp_path / 'inception')
  assert loaded_config == config
  assert tree_util.shape_mismatches(params, loaded) is None
  for path, value in tree_util.flatten(params).items():
    np.testing.assert_array_equal(tree_util.flatten(loaded)[path], value, err_msg=str(path))
  x = np.random.default_rng(2).random((2, 64, 64, 3), dtype=np.float32)
  np.testing.assert_array_equal(forward(loaded, x).pool, forward(params, x).pool)
  # And back: model directory -> torch file with pytorch-fid's names, bit-identical.
  back = tmp_path / 'back.pth'
  run.model_dir_to_torch(tmp_path / 'inception', back)
  again = state_dict.read_state_dict(back)
  sd.pop('Conv2d_1a_3x3.bn.num_batches_tracked')
  assert sorted(again) == sorted(sd)
  for k, v in sd.items():
    np.testing.assert_array_equal(again[k], v, err_msg=k)


def test_converter_is_strict_and_refuses_the_wrong_inception(perturbed):
  _, params = perturbed
  sd = dict(inception_keys.key_table(params).to_state_dict(params))
  assert detect.detect_kind(sd) == 'inception'
  abstract = build.abstract_params(inception.InceptionConfig())
  bad = dict(sd)
  bad.pop('Mixed_6d.branch1x1.bn.running_var')
  with pytest.raises(ConversionError, match='missing keys: Mixed_6d.branch1x1.bn.running_var'):
    inception_keys.key_table(abstract).to_params(bad, abstract)
  bad = {**sd, 'Mixed_5b.branch1x1.conv.weight': np.zeros((64, 192, 3, 3), np.float32)}
  with pytest.raises(ConversionError, match=r'Mixed_5b.branch1x1.conv.weight has shape'):
    inception_keys.key_table(abstract).to_params(bad, abstract)
  aux = {**sd, 'AuxLogits.fc.weight': np.zeros((1000, 768), np.float32)}
  with pytest.raises(ConversionError, match='torchvision.*not the FID Inception.*pt_inception'):
    detect.infer_config(aux)
  imagenet = {**sd, 'fc.weight': np.zeros((1000, 2048), np.float32)}
  with pytest.raises(ConversionError, match='1000 classes.*1008'):
    detect.infer_config(imagenet)


def test_missing_inception_directory_says_how_to_make_it(tmp_path):
  with pytest.raises(FileNotFoundError, match='pt_inception-2015-12-05-6726825d.pth.*convert'):
    features.load_inception(tmp_path / 'nope')


def test_config_round_trips_through_a_model_directory(tmp_path, perturbed):
  config, params = perturbed
  checkpoint.save_model_dir(tmp_path / 'm', config, params)
  assert checkpoint.load_config(tmp_path / 'm')[0] == config


# ---- opt-in: parity with pytorch-fid (needs torch, torchvision and pytorch-fid) ----------------


@pytest.mark.torch
@pytest.mark.parametrize('shape', [(2, 64, 64, 3), (2, 320, 300, 3)])
def test_parity_with_pytorch_fid(perturbed, forward, monkeypatch, shape):
  torch = pytest.importorskip('torch')
  pytest.importorskip('torchvision')
  pfid = pytest.importorskip('pytorch_fid.inception')
  _, params = perturbed
  sd = inception_keys.key_table(params).to_state_dict(params)
  # fid_inception_v3() loads its weights from this function: hand it ours (strict load).
  monkeypatch.setattr(pfid, 'load_state_dict_from_url',
                      lambda *a, **k: {n: torch.from_numpy(v) for n, v in sd.items()})
  net = pfid.InceptionV3([3], resize_input=True, normalize_input=True).eval()
  captured = {}
  net.blocks[2][6].branch1x1.register_forward_hook(  # Mixed_6d's 1x1 branch: sFID features
      lambda module, inputs, output: captured.setdefault('s', output))
  x = np.random.default_rng(3).random(shape, dtype=np.float32)
  with torch.no_grad():
    pool = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))[0][:, :, 0, 0].numpy()
  spatial = captured['s'].numpy()[:, :7].transpose(0, 2, 3, 1).reshape(shape[0], -1)
  logits = pool @ sd['fc.weight'].T
  out = forward(params, x)
  for name, ours, theirs in (('pool', out.pool, pool), ('logits', out.logits, logits),
                             ('spatial', out.spatial, spatial)):
    err = float(np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)))
    assert err < 1e-4, f'{name}: relative error {err}'
