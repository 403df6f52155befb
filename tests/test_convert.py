"""The converter: detection, strictness, both directions, and clear errors for bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURE_HEADS, REPO

from alitok_jax import Generator, Tokenizer, checkpoint, tree_util
from alitok_jax.convert import __main__ as cli
from alitok_jax.convert import detect, engine, keys, run, state_dict, torch_writer
from alitok_jax.models import build, variants

REFERENCE_KEYS = REPO.parent / 'shared' / 'reference' / 'state_dict_keys.json'


def _fixture_sd(fixtures_dir, name):
  return state_dict.read_state_dict(fixtures_dir / f'{name}.pth')


@pytest.mark.parametrize('name', ['ar', 'tokenizer', 'tokenizer_stage1'])
def test_detects_kind_and_sizes_of_fixtures(fixtures_dir, name):
  spec = json.loads((fixtures_dir / f'{name}.json').read_text())
  heads = {} if name == 'ar' else FIXTURE_HEADS
  cfg = detect.infer_config(_fixture_sd(fixtures_dir, name), **heads)
  if name == 'ar':
    assert (cfg.width, cfg.depth, cfg.heads, cfg.codebook_size, cfg.num_classes) == (
        spec['hidden_size'], spec['num_layers'], spec['num_heads'], spec['codebook_size'],
        spec['num_classes'])
  else:
    assert cfg.stage == (1 if spec['decoder']['causal'] else 2)
    assert (cfg.encoder.width, cfg.encoder.layers) == (spec['encoder']['width'],
                                                       spec['encoder']['layers'])
    assert (cfg.decoder.width, cfg.decoder.layers) == (spec['decoder']['width'],
                                                       spec['decoder']['layers'])
    assert (cfg.num_latent_tokens, cfg.buffer_tokens, cfg.codebook_size, cfg.token_size) == (
        spec['latent_tokens'], spec['buffer_tokens'], spec['codebook_size'], spec['token_size'])


def _reference_models():
  spec = json.loads(REFERENCE_KEYS.read_text())
  configs = {
      'tokenizer (released': variants.TOKENIZER['stage2'],
      'tokenizer stage 1': variants.TOKENIZER['stage1'],
      'tokenizer stage 2': variants.TOKENIZER['stage2'],
      'ar B': variants.AR['B'], 'ar L': variants.AR['L'], 'ar XL': variants.AR['XL'],
  }
  return [pytest.param(next(c for prefix, c in configs.items() if title.startswith(prefix)),
                       shapes, id=title.split(' (')[0]) for title, shapes in spec.items()]


@pytest.mark.parametrize('config,reference_shapes', _reference_models())
def test_key_table_matches_full_size_reference_state_dicts(config, reference_shapes):
  # The full-size models' torch names and shapes, produced from abstract shapes alone.
  params = _abstract_numpy(config)
  ours = {k: list(v.shape) for k, v in keys.key_table(params).to_state_dict(params).items()}
  reference = {k: v for k, v in reference_shapes.items() if k != '__note__'}
  if isinstance(config, variants.ARConfig):
    # The reference lists block 0 only; every block has the same keys.
    ours_block0 = {k: v for k, v in ours.items() if not k.startswith('blocks.') or
                   k.startswith('blocks.0.')}
    assert ours_block0 == reference
    assert len(ours) == len(reference) + (config.depth - 1) * 11
  else:
    assert ours == reference


def _abstract_numpy(config):
  """The parameter tree as zero-stride numpy arrays of the right shapes (no memory)."""
  flat = tree_util.flatten(build.abstract_params(config))
  return tree_util.unflatten({p: np.broadcast_to(np.zeros((), np.float32), a.shape)
                         for p, a in flat.items()})


@pytest.mark.parametrize('name', ['ar', 'tokenizer', 'tokenizer_stage1'])
def test_torch_to_jax_to_torch_is_bit_identical(fixtures_dir, model_dirs, tmp_path, name):
  back = tmp_path / f'{name}.pth'
  report = run.model_dir_to_torch(model_dirs[name], back)
  assert report.direction == 'jax->torch'
  original = _fixture_sd(fixtures_dir, name)
  restored = state_dict.read_state_dict(back)
  assert sorted(restored) == sorted(original)
  for k in original:
    assert restored[k].dtype == original[k].dtype, k
    np.testing.assert_array_equal(restored[k], original[k], err_msg=k)
  # And back again: JAX -> torch -> JAX gives the same params.
  again = tmp_path / f'{name}_again'
  heads = {} if name == 'ar' else FIXTURE_HEADS
  run.torch_to_model_dir(back, again, **heads)
  _, p1, _ = run.load_model_dir_numpy(model_dirs[name])
  _, p2, _ = run.load_model_dir_numpy(again)
  for path, v in tree_util.flatten(p1).items():
    np.testing.assert_array_equal(v, tree_util.flatten(p2)[path])


def test_cli_converts_both_directions(fixtures_dir, tmp_path, capsys):
  assert cli.main([str(fixtures_dir / 'ar.pth'), str(tmp_path / 'ar')]) == 0
  out = capsys.readouterr().out
  assert 'AR model: width 128, depth 2, heads 8' in out and '1,706,944 parameters' in out
  assert cli.main([str(tmp_path / 'ar'), str(tmp_path / 'ar.pth')]) == 0
  assert 'jax->torch' in capsys.readouterr().out
  # An existing destination is not overwritten without --overwrite.
  assert cli.main([str(fixtures_dir / 'ar.pth'), str(tmp_path / 'ar')]) == 2
  assert 'not empty' in capsys.readouterr().err
  assert cli.main([str(fixtures_dir / 'ar.pth'), str(tmp_path / 'ar'), '--overwrite']) == 0


def test_random_model_survives_jax_torch_jax(tmp_path):
  gen = Generator.random(variants.AR['tiny'], seed=5)
  gen.save(tmp_path / 'gen')
  run.model_dir_to_torch(tmp_path / 'gen', tmp_path / 'gen.pth')
  run.torch_to_model_dir(tmp_path / 'gen.pth', tmp_path / 'gen2')
  back = Generator.load(tmp_path / 'gen2')
  for path, v in tree_util.flatten(gen.params).items():
    np.testing.assert_array_equal(np.asarray(v), np.asarray(tree_util.flatten(back.params)[path]))


def test_nested_training_checkpoint_is_unwrapped():
  sd = {'a.weight': np.zeros((2, 2), np.float32)}
  assert state_dict.unwrap_state_dict({'model_state': sd, 'start_step': 5, 'log_dir': 'x'},
                                  'last.pth') == sd
  with pytest.raises(engine.ConversionError, match='not a plain state dict'):
    state_dict.unwrap_state_dict({'model': sd}, 'x.pth')


def test_codebook_usage_buffer_round_trips(fixtures_dir, tmp_path):
  sd = _fixture_sd(fixtures_dir, 'tokenizer_stage1')
  usage = np.random.default_rng(0).random(4096).astype(np.float32)
  torch_writer.save_torch_state_dict(tmp_path / 's1.pth', {**sd, 'quantize.embed_prob': usage})
  report = run.torch_to_model_dir(tmp_path / 's1.pth', tmp_path / 's1', **FIXTURE_HEADS)
  assert report.extras == ('codebook_usage',)
  np.testing.assert_array_equal(checkpoint.restore_codebook_usage(tmp_path / 's1'), usage)
  run.model_dir_to_torch(tmp_path / 's1', tmp_path / 'back.pth')
  np.testing.assert_array_equal(state_dict.read_state_dict(tmp_path / 'back.pth')
                                ['quantize.embed_prob'], usage)


# --- bad input -------------------------------------------------------------------------------


def _convert_error(src, dst, capsys, *extra) -> str:
  assert cli.main([str(src), str(dst), *extra]) == 2
  return capsys.readouterr().err


def test_missing_unexpected_and_misshaped_keys_are_named(fixtures_dir, tmp_path, capsys):
  sd = _fixture_sd(fixtures_dir, 'ar')
  bad = dict(sd)
  del bad['blocks.1.mlp.w2.weight']
  torch_writer.save_torch_state_dict(tmp_path / 'missing.pth', bad)
  err = _convert_error(tmp_path / 'missing.pth', tmp_path / 'o1', capsys)
  assert 'missing keys: blocks.1.mlp.w2.weight' in err

  torch_writer.save_torch_state_dict(tmp_path / 'extra.pth', {**sd, 'blocks.0.extra': sd['norm.weight']})
  assert 'unexpected keys: blocks.0.extra' in _convert_error(tmp_path / 'extra.pth', tmp_path / 'o2', capsys)

  bad = dict(sd)
  bad['blocks.0.attn.proj.bias'] = np.zeros(7, np.float32)
  torch_writer.save_torch_state_dict(tmp_path / 'shape.pth', bad)
  err = _convert_error(tmp_path / 'shape.pth', tmp_path / 'o3', capsys)
  assert 'blocks.0.attn.proj.bias has shape [7], the model expects [128]' in err
  assert not (tmp_path / 'o1').exists() and not (tmp_path / 'o3').exists()


def test_unknown_kind_is_refused(tmp_path, capsys):
  torch_writer.save_torch_state_dict(tmp_path / 'resnet.pth', {
      'conv1.weight': np.zeros((64, 3, 7, 7), np.float32), 'fc.bias': np.zeros(10, np.float32)})
  err = _convert_error(tmp_path / 'resnet.pth', tmp_path / 'out', capsys)
  assert 'cannot tell which model' in err and 'conv1.weight' in err


def test_not_a_checkpoint_and_truncated_checkpoint(fixtures_dir, tmp_path, capsys):
  (tmp_path / 'notes.txt').write_text('hello')
  assert 'not a zip archive' in _convert_error(tmp_path / 'notes.txt', tmp_path / 'o', capsys)
  data = (fixtures_dir / 'ar.pth').read_bytes()
  (tmp_path / 'half.pth').write_bytes(data[: len(data) // 2])
  assert 'truncated' in _convert_error(tmp_path / 'half.pth', tmp_path / 'o', capsys)
  assert 'does not exist' in _convert_error(tmp_path / 'nope.pth', tmp_path / 'o', capsys)


def test_tokenizer_of_unreleased_width_needs_heads(fixtures_dir, tmp_path, capsys):
  err = _convert_error(fixtures_dir / 'tokenizer.pth', tmp_path / 'o', capsys)
  assert 'pass --encoder-heads N' in err
  assert cli.main([str(fixtures_dir / 'tokenizer.pth'), str(tmp_path / 'o'), '--encoder-heads',
                   '4', '--decoder-heads', '4']) == 0


def test_model_dir_errors(model_dirs, tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match='no config.json'):
    Tokenizer.load(tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match='not a directory'):
    Tokenizer.load(tmp_path / 'missing')
  with pytest.raises(checkpoint.CheckpointError, match='use Generator.load'):
    Tokenizer.load(model_dirs['ar'])
  # A config that disagrees with the stored params names the mismatch.
  broken = tmp_path / 'broken'
  broken.mkdir()
  (broken / 'params').symlink_to(model_dirs['ar'] / 'params')
  doc = json.loads((model_dirs['ar'] / 'config.json').read_text())
  doc['model']['depth'] = 3
  (broken / 'config.json').write_text(json.dumps(doc))
  with pytest.raises(checkpoint.CheckpointError, match='missing: blocks.2'):
    Generator.load(broken)


# --- with PyTorch ----------------------------------------------------------------------------


@pytest.mark.torch
def test_torch_loads_what_we_write_and_we_read_torch_training_checkpoints(
    fixtures_dir, model_dirs, tmp_path):
  torch = pytest.importorskip('torch')
  run.model_dir_to_torch(model_dirs['tokenizer_stage1'], tmp_path / 'out.pth')
  ours = torch.load(tmp_path / 'out.pth')
  theirs = torch.load(fixtures_dir / 'tokenizer_stage1.pth')
  assert sorted(ours) == sorted(theirs)
  for k in theirs:
    assert torch.equal(ours[k], theirs[k]), k
  # A stage-1 training checkpoint as the reference trainer writes it (last.pth).
  theirs['quantize.embed_prob'] = torch.rand(4096)
  torch.save({'restart_time': 1, 'start_step': 11, 'log_dir': 'run', 'model_state': theirs,
              'criterion_state': {'discriminator.w': torch.zeros(3)},
              'scaler_state': {'scale': 65536.0, 'growth_factor': 2.0}}, tmp_path / 'last.pth')
  report = run.torch_to_model_dir(tmp_path / 'last.pth', tmp_path / 'stage1', **FIXTURE_HEADS)
  assert report.config.stage == 1 and report.extras == ('codebook_usage',)


def test_key_table_engine_is_strict_both_ways():
  """The one engine behind every converter: every key and every parameter accounted for."""
  rows = [engine.Row(('a', 'kernel'), 'a.weight', engine.LINEAR), engine.Row(('b',), 'b')]
  table = engine.KeyTable(rows, what='the toy', ignore=lambda k: k.endswith('.counter'))
  abstract = {'a': {'kernel': np.zeros((2, 3), np.float32)}, 'b': np.zeros(4, np.float32)}
  sd = {'a.weight': np.arange(6, dtype=np.float64).reshape(3, 2), 'b': np.ones(4),
        'a.counter': np.zeros(())}
  params = table.to_params(sd, abstract)
  assert params['a']['kernel'].dtype == np.float32 and params['a']['kernel'].shape == (2, 3)
  np.testing.assert_array_equal(params['a']['kernel'], sd['a.weight'].T)
  back = table.to_state_dict(params)
  assert list(back) == ['a.weight', 'b']
  np.testing.assert_array_equal(back['a.weight'], sd['a.weight'])
  with pytest.raises(engine.ConversionError, match='does not match the toy: missing keys: b'):
    table.to_params({'a.weight': sd['a.weight']}, abstract)
  with pytest.raises(engine.ConversionError, match=r'a.weight has shape \[2, 3\], the toy '
                                                   r'expects \[3, 2\]'):
    table.to_params({**sd, 'a.weight': np.zeros((2, 3))}, abstract)
  with pytest.raises(engine.ConversionError, match='internal: .* has no row for c'):
    table.to_params(sd, {**abstract, 'c': np.zeros(1)})
  with pytest.raises(engine.ConversionError, match='parameters not in the key table of the toy: c'):
    table.to_state_dict({**params, 'c': np.zeros(1)})
  with pytest.raises(engine.ConversionError, match=r'parameter b \(b\) of the toy is missing'):
    table.to_state_dict({'a': params['a']})
  with pytest.raises(engine.ConversionError, match='maps two parameters to one key'):
    engine.KeyTable(rows + [engine.Row(('c',), 'b')])
