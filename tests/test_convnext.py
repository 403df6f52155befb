"""ConvNeXt (the perceptual loss's network): fixture parity, the converter and its CLI hooks."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, load_io, nchw_to_nhwc
from flax import nnx

from alitok_jax import checkpoint, tree_util
from alitok_jax.convert import __main__ as cli
from alitok_jax.convert import convnext as convnext_keys
from alitok_jax.convert import detect, engine, run, state_dict, torch_writer
from alitok_jax.losses import perceptual
from alitok_jax.models import build, variants
from alitok_jax.models.convnext import CONVNEXT, ConvNeXtConfig

SMALL_KEYS = REPO.parent / 'shared' / 'reference' / 'convnext_small_keys.json'


def _fixture_sd(fixtures_dir):
  return state_dict.read_state_dict(fixtures_dir / 'convnext_tiny_random.pth')


_apply = jax.jit(lambda graphdef, params, x: nnx.merge(graphdef, params)(x), static_argnums=0)


def _logits(config, params, images_nhwc, dtype=jnp.float32):
  graphdef = build.abstract(config, dtype=dtype)[0]
  return np.asarray(_apply(graphdef, params, jnp.asarray(images_nhwc, dtype)))


@pytest.fixture(scope='module')
def fixture_params(fixtures_dir):
  sd = _fixture_sd(fixtures_dir)
  config = convnext_keys.infer_config(sd, 'fixture')
  return config, convnext_keys.key_table(config).to_params(sd, build.abstract_params(config))


def test_config_table_and_serialisation():
  small = CONVNEXT['small']
  assert small.stages == ((96, 3), (192, 3), (384, 27), (768, 3))
  assert CONVNEXT['tiny_random'].stages == ((16, 1), (32, 1), (64, 2), (128, 1))
  d = json.loads(json.dumps(small.to_dict()))  # through JSON: lists come back
  assert d['kind'] == 'convnext'
  assert variants.config_from_dict(d) == small
  assert hash(variants.config_from_dict(d)) == hash(small)
  with pytest.raises(ValueError, match='channels, blocks'):
    ConvNeXtConfig(((96, 3), (192,)))


def test_fixture_parity_float32(fixture_params):
  config, params = fixture_params
  assert config.stages == CONVNEXT['tiny_random'].stages
  io = load_io('convnext_tiny_random')
  got = _logits(config, params, nchw_to_nhwc(io['images']))
  assert got.dtype == np.float32 and got.shape == (2, 1000)
  rel = np.abs(got - io['logits']).max() / np.abs(io['logits']).max()
  assert rel < 1e-5, rel


def test_fixture_bfloat16_compute_is_close(fixture_params):
  config, params = fixture_params
  io = load_io('convnext_tiny_random')
  got = _logits(config, params, nchw_to_nhwc(io['images']), dtype=jnp.bfloat16)
  assert got.dtype == np.float32  # logits come back in float32 whatever the compute dtype
  rel = np.abs(got - io['logits']).max() / np.abs(io['logits']).max()
  assert rel < 3e-2, rel


def test_key_table_covers_full_size_torchvision_names():
  spec = json.loads(SMALL_KEYS.read_text())
  shapes = {k: v for k, v in spec.items() if not k.startswith('__')}
  # Zero-stride arrays of the right shapes: the whole convnext_small table without the memory.
  sd = {k: np.broadcast_to(np.zeros((), np.float32), s) for k, s in shapes.items()}
  assert detect.detect_kind(sd) == 'convnext'
  config = detect.infer_config(sd)
  assert config.stages == CONVNEXT['small'].stages and config.num_classes == 1000
  abstract = build.abstract_params(config)
  ours = convnext_keys.key_table(config).to_state_dict(
      tree_util.unflatten({p: np.broadcast_to(np.zeros((), np.float32), a.shape)
                           for p, a in tree_util.flatten(abstract).items()}))
  assert {k: list(v.shape) for k, v in ours.items()} == shapes
  assert list(ours) == list(shapes)  # torchvision's order
  assert sum(np.prod(a.shape) for a in tree_util.flatten(abstract).values()) == 50_223_688


def test_converter_hooks_and_round_trip_through_torch_files(fixtures_dir, fixture_params,
                                                            tmp_path):
  config, params = fixture_params
  sd = _fixture_sd(fixtures_dir)
  # Layouts: depthwise conv [C, 1, 7, 7] -> [7, 7, 1, C], linear transposed, layer scale -> [C].
  block = params['stages'][2][1]
  np.testing.assert_array_equal(block['dwconv']['kernel'],
                                sd['features.5.1.block.0.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(block['fc1']['kernel'], sd['features.5.1.block.3.weight'].T)
  np.testing.assert_array_equal(block['layer_scale'], sd['features.5.1.layer_scale'][:, 0, 0])
  np.testing.assert_array_equal(params['downsample'][0]['conv']['kernel'],
                                sd['features.2.1.weight'].transpose(2, 3, 1, 0))
  # params -> torch file -> params is bit-identical, and so is the torch side.
  torch_writer.save_torch_state_dict(tmp_path / 'back.pth',
                                     convnext_keys.key_table(config).to_state_dict(params))
  back = state_dict.read_state_dict(tmp_path / 'back.pth')
  assert list(back) == list(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
  again = convnext_keys.key_table(config).to_params(back, build.abstract_params(config))
  for path, v in tree_util.flatten(params).items():
    np.testing.assert_array_equal(tree_util.flatten(again)[path], v)


def test_converter_is_strict(fixtures_dir, fixture_params):
  config, _ = fixture_params
  sd = _fixture_sd(fixtures_dir)
  abstract = build.abstract_params(config)
  bad = dict(sd)
  del bad['features.5.1.block.3.bias']
  with pytest.raises(engine.ConversionError, match=r'missing keys: features\.5\.1\.block\.3\.bias'):
    convnext_keys.key_table(config).to_params(bad, abstract)
  with pytest.raises(engine.ConversionError, match=r'unexpected keys: features\.1\.0\.extra'):
    convnext_keys.key_table(config).to_params(
        {**sd, 'features.1.0.extra': sd['features.0.0.bias']}, abstract)
  bad = dict(sd)
  bad['features.3.0.layer_scale'] = np.zeros((32,), np.float32)
  with pytest.raises(engine.ConversionError,
                     match=r'features\.3\.0\.layer_scale has shape \[32\], .* \[32, 1, 1\]'):
    convnext_keys.key_table(config).to_params(bad, abstract)
  # Gaps in the numbering of stages or blocks are refused when sizes are inferred.
  gap = {k: v for k, v in sd.items() if not k.startswith('features.5.0.')}
  with pytest.raises(engine.ConversionError, match='stage 2'):
    convnext_keys.infer_config(gap, 'gap.pth')


def test_cli_converts_fixture_both_ways(fixtures_dir, tmp_path, capsys):
  src = fixtures_dir / 'convnext_tiny_random.pth'
  assert cli.main([str(src), str(tmp_path / 'convnext')]) == 0
  out = capsys.readouterr().out
  assert 'ConvNeXt: stages (channels, blocks) [(16, 1), (32, 1), (64, 2), (128, 1)]' in out
  config, _ = checkpoint.load_config(tmp_path / 'convnext')
  assert isinstance(config, ConvNeXtConfig)
  # The directory loads as the perceptual network and reproduces the fixture's logits.
  graphdef, params = perceptual.load_perceptual_net(tmp_path / 'convnext')
  io = load_io('convnext_tiny_random')
  got = np.asarray(_apply(graphdef, params, jnp.asarray(nchw_to_nhwc(io['images']))))
  assert np.abs(got - io['logits']).max() / np.abs(io['logits']).max() < 1e-5
  # And back to a torch file, bit-identical to the original.
  assert cli.main([str(tmp_path / 'convnext'), str(tmp_path / 'back.pth')]) == 0
  assert 'jax->torch' in capsys.readouterr().out
  original, back = _fixture_sd(fixtures_dir), state_dict.read_state_dict(tmp_path / 'back.pth')
  assert sorted(back) == sorted(original)
  for k in original:
    np.testing.assert_array_equal(back[k], original[k], err_msg=k)


def test_cli_names_a_missing_key(fixtures_dir, tmp_path, capsys):
  sd = _fixture_sd(fixtures_dir)
  del sd['classifier.0.bias']
  torch_writer.save_torch_state_dict(tmp_path / 'bad.pth', sd)
  assert cli.main([str(tmp_path / 'bad.pth'), str(tmp_path / 'out')]) == 2
  assert 'missing keys: classifier.0.bias' in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()


# --- with torchvision (opt-in) ---------------------------------------------------------------


def _torchvision():
  pytest.importorskip('torch')
  try:
    import torchvision  # noqa: PLC0415
  except Exception as e:  # noqa: BLE001 (a broken install raises more than ImportError)
    pytest.skip(f'torchvision is not importable: {type(e).__name__}: {e}')
  return torchvision


@pytest.mark.torch
def test_torchvision_convnext_small_random_weights(tmp_path):
  torchvision = _torchvision()
  import torch  # noqa: PLC0415

  torch.manual_seed(0)
  model = torchvision.models.convnext_small().eval()
  with torch.no_grad():  # perturb everything (norms, biases and layer scales too)
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.02)
  torch.save(model.state_dict(), tmp_path / 'convnext_small-random.pth')
  report = run.torch_to_model_dir(tmp_path / 'convnext_small-random.pth', tmp_path / 'small')
  assert report.config.stages == CONVNEXT['small'].stages
  graphdef, params = perceptual.load_perceptual_net(tmp_path / 'small')
  images = np.random.default_rng(0).random((2, 3, 224, 224), np.float32)
  with torch.no_grad():
    expected = model(torch.from_numpy(images)).numpy()
  got = np.asarray(_apply(graphdef, params, jnp.asarray(nchw_to_nhwc(images))))
  rel = np.abs(got - expected).max() / np.abs(expected).max()
  print(f'convnext_small float32: max abs diff {np.abs(got - expected).max():.3g}, '
        f'max abs logit {np.abs(expected).max():.3g}, relative {rel:.3g}')
  assert rel < 1e-5, rel
