"""`python -m alitok_jax.aot`: the tiny configs of all four modes compile for real TPU topologies
(v5e:2x2, v5p:2x2x1) with XLA's TPU compiler from libtpu, on this CPU machine, and their reports
hold together: memory below HBM, FSDP divides the state per chip, data parallelism does not,
loops counted, a step that does not fit exits 1 saying which knob helps.

Skipped, saying why, only where libtpu is not installed (`pip install -r requirements-tpu.txt`).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import isolated
from conftest import REPO
from alitok_jax import config_files
from alitok_jax.aot import chips

pytestmark = pytest.mark.skipif(not chips.libtpu_available(),
                                reason='libtpu is not installed: pip install -r '
                                       'requirements-tpu.txt (CI installs it)')

TOPOLOGIES = ('v5e:2x2', 'v5p:2x2x1')
MODES = {'train_ar': ('ar', 'tiny'), 'train_tokenizer': ('stage1', 'tiny'),
         'sample': ('sample', 'tiny'), 'pretokenize': ('pretokenize', 'tiny')}
GIB = 2**30


def _check(config, topology: str) -> dict:
  from alitok_jax.commands import aot  # pylint: disable=import-outside-toplevel
  return aot.check(config, topology)


@pytest.fixture(scope='module')
def reports() -> dict[tuple[str, str], dict]:
  """Every tiny mode compiled once per topology (the expensive part: a few minutes)."""
  return {(mode, topo): _check(config_files.load(*MODES[mode]), topo)
          for topo in TOPOLOGIES for mode in MODES}


def _ar(topology: str, **mesh) -> dict:
  """AR-tiny's step on another mesh; without dropout, which leaves every buffer as it is but
  compiles 3x faster (threefry's random bits are most of the tiny step's program)."""
  config = config_files.load('ar', 'tiny')
  config.mesh.update(mesh)
  for name in ('dropout', 'attn_dropout', 'token_dropout', 'class_dropout'):
    config[name] = 0.0
  return _check(config, topology)['programs'][0]


@pytest.mark.parametrize('topology', TOPOLOGIES)
@pytest.mark.parametrize('mode', sorted(MODES))
def test_every_mode_compiles_and_fits(reports, mode, topology):
  report = reports[(mode, topology)]
  assert report['fits'] and report['programs']
  hbm = chips.CHIPS[topology.split(':')[0]].hbm_bytes
  assert report['chip']['hbm_gib'] == hbm / GIB and report['chips'] == 4
  for p in report['programs']:
    m = p['memory']
    assert m['arguments'] > 0 and m['generated_code'] > 0 and m['temporaries'] >= 0
    assert 0 < m['total'] < hbm and p['hbm_bytes'] == hbm
    assert p['cost']['flops'] > 0 and p['cost']['hbm_bytes'] > 0
    r = p['roofline']
    assert r['time_s'] == max(r['compute_s'], r['memory_s']) > 0 and 0 < r['mfu'] <= 1
    assert r['items_per_s'] == pytest.approx(p['work'] / r['time_s'])
    assert not p['unknown_loops'], p['name']


def test_the_compiled_functions_are_the_modes_own(reports):
  names = {mode: [p['name'] for p in reports[(mode, 'v5e:2x2')]['programs']] for mode in MODES}
  assert len(names['train_ar']) == 1 and 'train step' in names['train_ar'][0]
  tokenizer = ' | '.join(names['train_tokenizer'])
  # configs/stage1.py:tiny: a pixels-only phase, then a GAN phase (generator and discriminator).
  assert len(names['train_tokenizer']) == 3 and 'discriminator iteration, phase gan' in tokenizer
  assert names['sample'][0].startswith('sample_codes') and 'decoding' in names['sample'][1]
  assert '10 crops' in names['pretokenize'][0]


def test_the_samplers_scan_is_counted_step_by_step(reports):
  sample = reports[('sample', 'v5e:2x2')]['programs'][0]
  # 272 decode steps after the prefill, in 8 segments: XLA's own count sees each segment once.
  assert sample['cost']['flops'] > 20 * sample['xla_cost_loops_once']['flops']


def test_fsdp_divides_the_state_per_chip_and_data_parallelism_does_not(reports):
  replicated = reports[('train_ar', 'v5e:2x2')]['programs'][0]['memory']['arguments']
  sharded = _ar('v5e:2x2', data=1, fsdp=4, fsdp_min_size=0)['memory']['arguments']
  assert sharded == pytest.approx(replicated / 4, rel=0.10)
  wider = _ar('v5e:2x4')['memory']['arguments']  # data=8 instead of 4: the same state per chip
  assert wider == pytest.approx(replicated, rel=0.02)


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'alitok_jax.aot', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        env=isolated.fake_devices_env(1))


def test_a_step_that_does_not_fit_exits_1_naming_the_knob(tmp_path):
  out = _cli('--config=configs/pretokenize.py:tiny', '--topology=v5e:2x2',
             '--config.batch_size=60000', f'--out={tmp_path / "r.json"}')
  assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
  assert 'DOES NOT FIT' in out.stdout and 'to fit: a batch of at most' in out.stdout
  assert (tmp_path / 'r.json').is_file()


def test_a_bad_topology_is_one_line_and_exit_2():
  out = _cli('--config=configs/ar.py:tiny', '--topology=v9x:2x2')
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith("error: unknown TPU chip 'v9x'")


def test_a_mode_without_steps_is_refused():
  out = _cli('--config=configs/fid.py', '--topology=v5e:2x2')
  assert out.returncode == 2 and 'covers the modes' in out.stderr


def test_the_sampler_at_512_pixels_compiles_its_1057_steps():
  # configs/sample.py:tiny,res=512: tiny models sized for 512 pixels (a 32 x 32 grid, 33 prefix
  # tokens): the sampler's scan runs 1,057 steps and the decoder takes [B, 1057] codes.
  # Two segments instead of 8: the same program in fewer scan copies, a quicker compile.
  config = config_files.load('sample', 'tiny,res=512')
  config.segments = 2
  report = _check(config, 'v5e:2x2')
  assert report['fits'] and len(report['programs']) == 2
  sample, decode = report['programs']
  assert '1057 codes' in sample['name'] and not sample['unknown_loops']
  assert 0 < sample['memory']['total'] < chips.CHIPS['v5e'].hbm_bytes
  # 1,056 steps after the prefill in 2 segments (~528 each): counted step by step.
  assert sample['cost']['flops'] > 200 * sample['xla_cost_loops_once']['flops']
  # The 4 images over 4 chips: one uint8 512 x 512 image out of each chip.
  assert decode['fits'] and decode['memory']['outputs'] >= 512 * 512 * 3
