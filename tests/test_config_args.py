"""Config arguments (`--config=configs/ar.py:L,accum=4`): the parser, every config file's
arguments, and the released guidance settings kept in one place."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import REPO

from alitok_jax import config_args, config_files
from alitok_jax.models import variants


def _parse(arg):
  return config_args.parse(arg, 'configs/x.py', variants=('B', 'XL', 'tiny'), default='B',
                           batch=int, res=256, remat=False, name='a')


def test_variant_and_typed_settings():
  variant, args = _parse(None)
  assert variant == 'B'
  assert args.to_dict() == {'batch': None, 'res': 256, 'remat': False, 'name': 'a'}
  assert _parse('')[0] == 'B'
  variant, args = _parse('XL,batch=1024,res=512,remat,name=b')
  assert variant == 'XL' and (args.batch, args.res, args.remat, args.name) == (1024, 512, True, 'b')
  assert _parse('res=384')[0] == 'B' and _parse('res=384')[1].res == 384
  assert _parse('tiny, remat=no')[1].remat is False


@pytest.mark.parametrize('arg,match', [
    ('XXL', r"unknown variant 'XXL' in configs/x.py:XXL \(did you mean 'XL'\?\); configs/x.py "
            r"takes variants :B, :XL, :tiny and settings batch=<int>, res=256"),
    ('XL,bach=3', r"unknown setting 'bach'.*did you mean 'batch'"),
    ('batch=x', r"batch='x' must be an int"),
    ('remat=maybe', r"remat='maybe' must be a bool"),
    ('batch=1,batch=2', 'given twice'),
    ('batch=1,XL', 'the variant comes first'),
    ('XL,tiny', 'one variant only'),
    ('res', r"setting 'res' needs a value"),
    ('XL,,batch=1', 'empty item'),
])
def test_bad_arguments_say_what_the_file_takes(arg, match):
  with pytest.raises(ValueError, match=match):
    _parse(arg)


def test_every_config_file_takes_its_documented_arguments():
  c = config_files.load('ar', 'XL')
  assert (c.model, c.batch_size, c.accum_steps) == ('XL', 2048, 1)
  c = config_files.load('ar', 'L,accum=4')
  assert (c.model, c.batch_size, c.accum_steps) == ('L', 2048, 4)
  c = config_files.load('ar', 'tiny,batch=8')
  assert (c.model, c.batch_size, c.data.kind) == ('tiny', 8, 'synthetic_codes')
  c = config_files.load('sample', 'XL,images=10000,batch=32')
  assert (c.variant, c.num_images, c.batch_size) == ('XL', 10000, 32)
  c = config_files.load('stage1', 'tiny,batch=4')
  assert (c.model, c.batch_size, c.stage) == ('tiny_stage1', 4, 1)
  assert config_files.load('stage2', 'batch=64').batch_size == 64
  assert config_files.load('stage2').model == 'stage2'
  for name, variant in (('demo', 'small'), ('fid', 'tiny'), ('rfid', 'tiny'),
                        ('reconstruct', 'tiny'), ('pretokenize', 'tiny')):
    assert config_files.load(name, variant).mode
    with pytest.raises(ValueError, match=f"unknown variant 'huge' in configs/{name}.py"):
      config_files.load(name, 'huge')


def test_released_guidance_lives_in_one_place():
  assert variants.RELEASED_GUIDANCE == {'B': (16.0, 1.8), 'L': (6.0, 0.7), 'XL': (13.0, 1.4)}
  for variant, (scale, power) in variants.RELEASED_GUIDANCE.items():
    ar, sample = config_files.load('ar', variant), config_files.load('sample', variant)
    assert (ar.sample_guidance, ar.sample_guidance_pow) == (scale, power)
    assert (sample.guidance_scale, sample.guidance_pow) == (scale, power)
  for name in ('ar.py', 'sample.py'):  # the numbers are not written out again in the code
    numbers = {n.value for n in ast.walk(ast.parse((REPO / 'configs' / name).read_text()))
               if isinstance(n, ast.Constant) and isinstance(n.value, float)}
    assert not numbers & {16.0, 1.8, 6.0, 0.7, 13.0}, (name, numbers)


def test_main_reports_a_bad_config_argument(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'alitok_jax.main',
                        '--config=configs/ar.py:tiny,bach=8', f'--workdir={tmp_path}'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "unknown setting 'bach'" in out.stderr
  assert "did you mean 'batch'" in out.stderr
