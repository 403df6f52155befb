"""Sizes as data (issue 16): 512 pixels and the 16,384-entry codebook through configs, training
starts from converted 512 directories, and a 16,384-codebook tiny run end to end."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from alitok_jax import Generator, Tokenizer, checkpoint, config_files
from alitok_jax.commands import pretokenize, sample, train_ar, train_tokenizer
from alitok_jax.convert import run as convert_run
from alitok_jax.errors import ConfigError
from alitok_jax.models import build, rope, variants
from alitok_jax.models.tokenizer import prefix_target
from alitok_jax.train import ar_setup, tokenizer_init, tokenizer_setup, tokenizer_steps


def _params(directory) -> dict:
  cfg, _ = checkpoint.load_config(directory)
  return jax.tree.map(np.asarray, checkpoint.restore_params(directory, build.abstract_params(cfg)))


def _equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize('size, grid, prefix, codes', [(256, 16, 17, 273), (512, 32, 33, 1057),
                                                      (1024, 64, 65, 4161)])
def test_every_size_follows_the_image_size(size, grid, prefix, codes):
  for base in (variants.TOKENIZER['stage1'], variants.TOKENIZER['stage2']):
    tok = variants.sized(base, image_size=size, codebook_size=16384)
    assert (tok.grid_size, tok.prefix_tokens, tok.num_latent_tokens) == (grid, prefix, codes)
    assert tok.codebook_size == 16384 and tok.encoder == base.encoder
  for name in ('B', 'L', 'XL'):
    ar = variants.sized(variants.AR[name], image_size=size, codebook_size=16384)
    assert (ar.grid_size, ar.prefix_tokens, ar.image_seq_len, ar.seq_len) == (
        grid, prefix, codes, codes + 1)
    assert ar.vocab_size == 16384 + 1 + 1000 + 1 and ar.width == variants.AR[name].width
  # The prefix target: the top-left patch then the first patch row = prefix patches wide.
  images = np.zeros((1, size, size, 3), np.float32)
  assert prefix_target(images, 16).shape == (1, 16, 16 * prefix, 3)
  assert tokenizer_steps.prefix_loss_scale(prefix, grid) == 10.0 * prefix / grid**2
  # The RoPE table: class row, prefix 0..K-1 (1D), grid row r / column c at K + r / K + c.
  cos, sin = rope.rope_table(16, prefix, grid)
  assert cos.shape == (1 + codes, 8)
  angles = np.arctan2(sin, cos)
  freq = np.float32(1.0)  # pair 0 of each half: frequency 1
  r, c = grid - 1, grid - 2
  row = 1 + prefix + r * grid + c
  np.testing.assert_allclose(np.cos(angles[row, 0]), np.cos((prefix + r) * freq), atol=1e-5)
  np.testing.assert_allclose(np.cos(angles[row, 4]), np.cos((prefix + c) * freq), atol=1e-5)
  np.testing.assert_allclose(np.cos(angles[prefix, 0]), np.cos(prefix - 1.0), atol=1e-5)


def test_the_prefix_rule_is_enforced():
  with pytest.raises(ValueError, match='breaks the prefix rule'):
    variants.TokenizerConfig(variants.ViTConfig(64, 2, 4), variants.ViTConfig(96, 2, 4),
                             image_size=512, prefix_tokens=17)
  with pytest.raises(ValueError, match='breaks the prefix rule'):
    variants.ARConfig(width=128, depth=2, heads=8, image_seq_len=1041, prefix_tokens=17)


@pytest.mark.parametrize('name, arg', [
    ('stage1', 'res=512'), ('stage2', 'tiny,res=512,codebook=16384'), ('ar', 'L,res=512'),
    ('ar', 'tiny,codebook=16384'), ('sample', 'XL,res=512'), ('pretokenize', 'res=512')])
def test_configs_take_res_and_codebook(name, arg):
  c = config_files.load(name, arg)
  want_res = 512 if 'res=512' in arg else 256
  want_codebook = 16384 if 'codebook=16384' in arg else 4096
  assert (c.image_size, c.codebook_size) == (want_res, want_codebook)
  if name.startswith('stage'):
    tok = tokenizer_setup.model_config(c)
    assert (tok.image_size, tok.codebook_size) == (want_res, want_codebook)
  if name == 'ar':
    ar = ar_setup.model_config(c)
    assert ar.image_seq_len == (1057 if want_res == 512 else 273)
    assert ar.codebook_size == want_codebook


def test_released_defaults_are_unchanged():
  assert ar_setup.model_config(config_files.load('ar', 'XL')) == variants.AR['XL']
  assert tokenizer_setup.model_config(config_files.load('stage2', None)) == (
      variants.TOKENIZER['stage2'])
  c = config_files.load('ar', 'B')
  assert (c.batch_size, c.optim.lr, c.optim.total_steps) == (2048, 4e-4, 500_000)
  c = config_files.load('ar', 'B,res=512')
  assert (c.batch_size, c.optim.lr, c.optim.total_steps) == (1024, 1e-4, 100_000)
  with pytest.raises(ConfigError, match='res=0 must be a positive image size'):
    config_files.load('ar', 'B,res=0')
  c = config_files.load('stage1', 'res=500')
  with pytest.raises(ConfigError, match='not a multiple of patch_size 16'):
    tokenizer_setup.model_config(c)


def test_stage1_can_start_from_a_stage2_tokenizer_by_the_matching_rule():
  stage2 = jax.tree.map(np.asarray, build.random_params(variants.TOKENIZER['tiny_stage2'], seed=1))
  fresh = jax.tree.map(np.asarray, build.random_params(variants.TOKENIZER['tiny_stage1'], seed=2))
  params, kept_fresh, dropped = tokenizer_init.carry_matching(stage2, fresh)
  assert kept_fresh == ['decoder.class_embedding', 'decoder.conv_out_aux.bias',
                        'decoder.conv_out_aux.kernel', 'decoder.ffn_aux.bias',
                        'decoder.ffn_aux.kernel', 'decoder.latent_token_positional_embedding']
  assert dropped == []
  _equal(params['encoder'], stage2['encoder'])
  build.check_params(variants.TOKENIZER['tiny_stage1'], params)


def _tiny_stage(stage: int, arg: str, workdir, init_from: str = '', steps: int = 2,
                lr: float = 1e-3):
  c = config_files.load(f'stage{stage}', arg)
  c.batch_size, c.eval_images, c.preview_images = 2, 2, 2
  c.optim.lr = lr  # the warm-up's peak; the phase ramps to its own lr
  c.phases = [dict(name='reconstruction', steps=steps, lr=lr)]
  c.log_every = c.eval_every = c.ckpt_every = steps
  c.init_from = init_from
  return train_tokenizer.run(c, str(workdir))


def test_512_training_starts_from_a_converted_256_tokenizer(fixtures_dir, tmp_path):
  convert_run.torch_to_model_dir(fixtures_dir / 'tokenizer.pth', tmp_path / 't512',
                                 encoder_heads=4, decoder_heads=4, image_size=512)
  # Stage 2 at 512 from the converted stage-2 tokenizer: every tensor carries over; at lr 0 the
  # export is the converted tokenizer itself (the frozen encoder and the decoder alike).
  _tiny_stage(2, 'tiny,res=512', tmp_path / 's2', init_from=str(tmp_path / 't512'), steps=1,
              lr=0.0)
  _equal(_params(tmp_path / 's2/model'), _params(tmp_path / 't512'))
  # Stage 1 at 512 from it too (the matching rule), which trains the interpolated encoder.
  _tiny_stage(1, 'tiny,res=512', tmp_path / 's1', init_from=str(tmp_path / 't512'), steps=1)
  s1 = _params(tmp_path / 's1/model')
  assert s1['encoder']['positional_embedding'].shape == (1024, 64)
  assert s1['decoder']['ffn_aux']['kernel'].shape == (96, 16 * 16 * 3)
  # A 256 directory in a 512 run is refused, naming the conversion.
  convert_run.torch_to_model_dir(fixtures_dir / 'tokenizer.pth', tmp_path / 't256',
                                 encoder_heads=4, decoder_heads=4)
  with pytest.raises(ConfigError, match=r'image_size 256 \(the run: 512\).*--image-size=512'):
    _tiny_stage(1, 'tiny,res=512', tmp_path / 'bad', init_from=str(tmp_path / 't256'))


def test_512_ar_fine_tune_starts_from_the_256_weights(fixtures_dir, tmp_path, capsys):
  convert_run.torch_to_model_dir(fixtures_dir / 'ar.pth', tmp_path / 'a256')
  c = config_files.load('ar', 'tiny,res=512')
  c.init_from = str(tmp_path / 'a256')
  c.batch_size, c.eval_codes, c.eval_every = 4, 8, 0
  c.optim.lr = c.optim.end_lr = 0.0
  c.optim.total_steps, c.log_every, c.ckpt_every = 1, 1, 1
  train_ar.run(c, str(tmp_path / 'ar512'))
  out = capsys.readouterr().out
  assert 'its 273-code weights serve 1057 codes as they are' in out
  assert checkpoint.load_config(tmp_path / 'ar512/model')[0].image_seq_len == 1057
  _equal(_params(tmp_path / 'ar512/model'), _params(tmp_path / 'a256'))
  c.init_from, c.codebook_size = str(tmp_path / 'a256'), 16384
  with pytest.raises(ConfigError, match=r'codebook_size 4096 \(the run: 16384\)'):
    train_ar.run(c, str(tmp_path / 'bad'))


def test_16384_codebook_tiny_pipeline_stage1_ar_sample(tmp_path):
  """Stage 1 -> pretokenization -> AR -> sampling with the 16,384-entry codebook (Table 6)."""
  _tiny_stage(1, 'tiny,codebook=16384', tmp_path / 's1', steps=3)
  tok_dir = tmp_path / 's1/model'
  tok = Tokenizer.load(tok_dir)
  assert tok.config.codebook_size == 16384
  assert _params(tok_dir)['quantize']['codebook'].shape == (16384, 32)

  p = config_files.load('pretokenize', 'tiny,codebook=16384')
  p.tokenizer, p.random_tokenizer = str(tok_dir), ''
  p.data.size, p.images_per_shard, p.batch_size = 8, 8, 4
  pretokenize.run(p, str(tmp_path / 'codes'))
  codes = np.concatenate([np.load(f) for f in sorted((tmp_path / 'codes').glob('codes-*.npy'))])
  assert codes.shape == (80, 273) and codes.max() < 16384

  a = config_files.load('ar', 'tiny,codebook=16384')
  a.data.kind, a.data.codes_dir = 'codes', str(tmp_path / 'codes')
  a.batch_size, a.eval_codes, a.eval_every = 8, 8, 0
  a.optim.total_steps, a.log_every, a.ckpt_every = 3, 3, 3
  a.tokenizer = str(tok_dir)
  train_ar.run(a, str(tmp_path / 'ar'))
  gen = Generator.load(tmp_path / 'ar/model')
  assert gen.config.codebook_size == 16384 and gen.config.vocab_size == 16384 + 1002

  s = config_files.load('sample', 'tiny,codebook=16384')
  s.generator, s.tokenizer = str(tmp_path / 'ar/model'), str(tok_dir)
  s.num_images, s.batch_size, s.write_pngs = 4, 4, False
  sample.run(s, str(tmp_path / 'samples'))
  with np.load(tmp_path / 'samples/samples.npz') as f:
    assert f['arr_0'].shape == (4, 256, 256, 3)
  # The codes use the whole range: some beyond the 4,096 of the released codebook.
  drawn = np.asarray(gen.sample(np.arange(4), 2.0, 1.0, seed=0))
  assert drawn.shape == (4, 273) and drawn.max() < 16384 and (drawn >= 4096).any()
  # A config asking for another codebook than the models have is refused.
  s.codebook_size = 4096
  with pytest.raises(ConfigError, match='codebook_size 16384, but the config asks for 4096'):
    sample.run(s, str(tmp_path / 'samples2'))


def test_code_shards_of_another_size_are_refused(tmp_path):
  from alitok_jax.data import code_shards  # noqa: PLC0415
  from alitok_jax.train import train_data  # noqa: PLC0415

  code_shards.write_shard(tmp_path, 0, np.zeros((4, 273), np.int32), np.zeros(4, np.int32))
  c = config_files.load('ar', 'tiny,res=512')
  c.data.kind, c.data.codes_dir = 'codes', str(tmp_path)
  with pytest.raises(ConfigError, match='holds 273 codes per example, but the AR model takes 1057'):
    train_data.code_source(c.data, ar_setup.model_config(c), 0)
  (tmp_path / 'pretokenize.json').write_text('{"codebook_size": 16384}')
  c = config_files.load('ar', 'tiny')
  c.data.kind, c.data.codes_dir = 'codes', str(tmp_path)
  with pytest.raises(ConfigError, match='codes of a 16384-entry codebook, but the AR model has 4096'):
    train_data.code_source(c.data, ar_setup.model_config(c), 0)
  c = config_files.load('ar', 'tiny,codebook=16384')
  c.data.kind, c.data.codes_dir = 'codes', str(tmp_path)
  assert len(train_data.code_source(c.data, ar_setup.model_config(c), 0)) == 4
