"""Training faults: divergence, damaged checkpoints and exports, preemption (docs/ROBUSTNESS.md).

Each test reproduces a failure that a hostile or unlucky user met and asserts that nothing is
lost: a diverged run stops without saving garbage, a damaged newest checkpoint is set aside and
the previous one resumes, a damaged or non-finite model directory is refused, SIGTERM saves
within about a step whatever `log_every` is.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from alitok_jax import checkpoint, commands, config_files
from alitok_jax.models import build, variants
from alitok_jax.train import ar_setup, ar_steps, checkpoints, loop, nonfinite, optim
from alitok_jax.train import tokenizer_steps

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _ar_config(**overrides):
  config = config_files.load('ar', 'tiny')
  with config.unlocked():
    config.optim.total_steps, config.ckpt_every, config.keep_checkpoints = 6, 2, 3
    config.log_every, config.eval_every = 2, 1000
    for key, value in overrides.items():
      node = config
      *parents, leaf = key.split('.')
      for p in parents:
        node = node[p]
      node[leaf] = value
  return config


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny AR run of 6 steps with checkpoints at steps 2, 4 and 6 and an export."""
  workdir = tmp_path_factory.mktemp('trained')
  commands.run(_ar_config(), str(workdir))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4', '6']
  return workdir


def _abstract_ar_state(config):
  cfg = ar_setup.model_config(config)
  _, tx = ar_setup.optimizer(config, cfg)
  spec, mesh = loop.mesh_from_config(config.mesh, lambda _: None)
  return loop.abstract_state(functools.partial(ar_setup.init_fn(cfg, tx), config.seed), mesh,
                             spec)[0]


# --- divergence --------------------------------------------------------------------------------


def test_diverging_ar_run_stops_with_exit_3_and_saves_nothing(tmp_path):
  """lr=1e6: used to log loss=nan, save all-NaN checkpoints, export a NaN model and exit 0."""
  result = subprocess.run(
      [sys.executable, '-m', 'alitok_jax.main', '--config=configs/ar.py:tiny',
       f'--workdir={tmp_path}', '--config.optim.lr=1e6', '--config.ckpt_every=3',
       '--config.nonfinite_patience=4', '--config.log_every=2'],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 3, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert 'training diverged' in last and '4 consecutive steps' in last, result.stderr[-3000:]
  assert not (tmp_path / 'model').exists()
  abstract = _abstract_ar_state(_ar_config())
  ckpt = checkpoints.TrainCheckpointer(tmp_path / 'checkpoints')
  restored = ckpt.restore(abstract)  # whatever was saved is finite (and verified)
  if restored is not None:
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored[1]['params']))
  scalars = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert any(s.get('train/skipped_steps', 0) > 0 for s in scalars)


def _ar_step_setup():
  cfg = variants.AR['tiny']
  tx = optim.adamw(b1=0.9, b2=0.96, weight_decay=0.03, grad_clip=1.0,
                   decay_mask=optim.decay_mask_matrices(build.abstract_params(cfg)))
  state = ar_setup.init_fn(cfg, tx)(0)
  settings = ar_steps.ARStepSettings(build.abstract(cfg)[0], cfg,
                                     optim.warmup_cosine(1e-3, 0, 10, 1e-5), tx)
  rng = np.random.default_rng(0)
  batch = {'codes': jnp.asarray(rng.integers(0, cfg.codebook_size, (4, cfg.image_seq_len)),
                                jnp.int32),
           'label': jnp.asarray(rng.integers(0, cfg.num_classes, (4,)), jnp.int32)}
  return settings, state, batch


def _same(a, b) -> bool:
  return all(np.array_equal(x, y, equal_nan=True)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_a_non_finite_ar_step_changes_nothing_but_the_step():
  settings, state, batch = _ar_step_setup()
  step = jax.jit(functools.partial(ar_steps.train_step, settings))
  bad = jax.tree.map(lambda x: x, state)
  bad['params']['norm']['weight'] = bad['params']['norm']['weight'].at[0].set(jnp.inf)
  new, metrics = step(bad, batch, jax.random.key(0))
  assert not np.isfinite(float(metrics['loss']))
  assert _same(new['params'], bad['params']) and _same(new['opt'], bad['opt'])
  assert int(new['step']) == 1
  assert int(new['nonfinite']['consecutive']) == 1 and int(new['nonfinite']['skipped']) == 1
  good, _ = step(new | {'params': state['params']}, batch, jax.random.key(0))
  assert not _same(good['params'], state['params'])  # a finite step updates ...
  assert int(good['nonfinite']['consecutive']) == 0  # ... and resets the run of skips
  assert int(good['nonfinite']['skipped']) == 1


def test_a_non_finite_tokenizer_step_leaves_codebook_and_usage_alone():
  cfg = variants.TOKENIZER['tiny_stage1']
  tx = optim.adamw(b1=0.9, b2=0.999, weight_decay=0.01)
  state = jax.jit(tokenizer_steps.make_init_fn(cfg, tx, clustering=True), static_argnums=0)(
      0, None)
  settings = tokenizer_steps.StepSettings(
      model=build.abstract(cfg)[0], disc=None, perceptual=None, lpips=False,
      schedule=optim.phased_schedule(1e-3, 0, [optim.Phase('p', 10, 1e-3)]), tx=tx,
      disc_tx=None, stage=1, clustering=True)
  images = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
  batch = {'image': jnp.asarray(images)}
  decoder = state['params']['decoder']
  key = next(k for k in decoder if isinstance(decoder[k], dict) and 'scale' in decoder[k])
  decoder[key]['scale'] = decoder[key]['scale'].at[0].set(jnp.nan)
  new, metrics = jax.jit(functools.partial(tokenizer_steps.generator_step, settings))(
      state, {}, batch)
  assert not np.isfinite(float(metrics['loss/total']))
  for part in ('params', 'opt', 'usage'):
    assert _same(new[part], state[part]), part
  assert int(new['nonfinite']['consecutive']) == 1 and int(new['step']) == 1


def test_diverging_stage1_run_raises_and_exports_nothing(tmp_path):
  config = config_files.load('stage1', 'tiny')
  with config.unlocked():
    config.optim.lr, config.nonfinite_patience = 1e6, 3
  with pytest.raises(nonfinite.TrainingDiverged, match='3 consecutive steps'):
    commands.run(config, str(tmp_path))
  assert not (tmp_path / 'model').exists()


# --- damaged checkpoints -----------------------------------------------------------------------


def _largest_state_file(step_dir: pathlib.Path) -> pathlib.Path:
  return max((p for p in (step_dir / 'state').rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)


def _random_bytes(step_dir):
  path = _largest_state_file(step_dir)
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 4096] = np.random.default_rng(0).bytes(4096)
  path.write_bytes(bytes(data))


def _truncate_data(step_dir):
  path = _largest_state_file(step_dir)
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _truncate_metadata(step_dir):
  path = step_dir / 'state' / '_METADATA'
  path.write_bytes(path.read_bytes()[:100])


def _delete_manifests(step_dir):
  for path in (step_dir / 'state').rglob('manifest.ocdbt'):
    path.unlink()


@pytest.mark.parametrize('damage', [_random_bytes, _truncate_data, _truncate_metadata,
                                    _delete_manifests], ids=lambda f: f.__name__.strip('_'))
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_previous_restored(
    trained, tmp_path, damage):
  workdir = tmp_path / 'w'
  shutil.copytree(trained, workdir)
  damage(workdir / 'checkpoints' / '6')
  notes = []
  ckpt = checkpoints.TrainCheckpointer(workdir / 'checkpoints', log=notes.append)
  step, state = ckpt.restore(_abstract_ar_state(_ar_config()))
  assert step == 4
  reference = checkpoints.TrainCheckpointer(trained / 'checkpoints').restore(
      _abstract_ar_state(_ar_config()), step=4)[1]
  assert _same(state, reference)
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
  assert (workdir / 'checkpoints-set-aside' / '6' / 'state').is_dir()  # renamed, not deleted
  assert len(notes) == 1 and 'step 6 is damaged' in notes[0] and 'set-aside/6' in notes[0]


def test_when_every_checkpoint_is_damaged_all_are_set_aside_and_none_restored(trained, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(trained, workdir)
  for step in ('2', '4', '6'):
    _truncate_metadata(workdir / 'checkpoints' / step)
  ckpt = checkpoints.TrainCheckpointer(workdir / 'checkpoints', log=lambda _: None)
  assert ckpt.restore(_abstract_ar_state(_ar_config())) is None
  assert sorted(p.name for p in ckpt.set_aside) == ['2', '4', '6']
  assert sorted(os.listdir(workdir / 'checkpoints-set-aside')) == ['2', '4', '6']


def test_a_rerun_resumes_from_the_previous_step_when_the_iterator_file_is_damaged(
    trained, tmp_path, capsys):
  workdir = tmp_path / 'w'
  shutil.copytree(trained, workdir)
  iterator = workdir / 'checkpoints' / '6' / 'data' / 'process_0-of-1.json'
  iterator.write_text(iterator.read_text()[:5])
  commands.run(_ar_config(**{'optim.total_steps': 8}), str(workdir))
  out = capsys.readouterr().out
  assert 'checkpoint step 6 is damaged' in out and 'resumed from' in out and '/4 (step 4)' in out
  assert (workdir / 'checkpoints-set-aside' / '6').is_dir()
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['4', '6', '8']


def test_a_checkpoint_of_another_model_is_an_error_and_is_kept(trained):
  config = _ar_config()
  cfg = variants.ARConfig(**{**ar_setup.model_config(config).__dict__,
                             'depth': variants.AR['tiny'].depth + 1})
  _, tx = ar_setup.optimizer(config, cfg)
  spec, mesh = loop.mesh_from_config(config.mesh, lambda _: None)
  abstract = loop.abstract_state(functools.partial(ar_setup.init_fn(cfg, tx), 0), mesh, spec)[0]
  with pytest.raises(checkpoint.CheckpointError, match='different train state'):
    checkpoints.TrainCheckpointer(trained / 'checkpoints').restore(abstract)
  assert sorted(os.listdir(trained / 'checkpoints')) == ['2', '4', '6']


# --- damaged or non-finite exports -------------------------------------------------------------


def test_a_damaged_export_is_refused_on_load(trained, tmp_path):
  from alitok_jax import Generator
  model = tmp_path / 'model'
  shutil.copytree(trained / 'model', model)
  Generator.load(model)  # intact: loads
  path = max((p for p in (model / 'params').rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)
  data = bytearray(path.read_bytes())
  data[len(data) // 2:len(data) // 2 + 4096] = np.random.default_rng(1).bytes(4096)
  path.write_bytes(bytes(data))
  with pytest.raises(checkpoint.CheckpointError, match='damaged'):
    Generator.load(model)


def test_a_model_directory_with_nan_parameters_is_refused(trained, tmp_path):
  from alitok_jax import Generator
  cfg, _ = checkpoint.load_config(trained / 'model')
  params = jax.tree.map(np.array, checkpoint.restore_params(trained / 'model',
                                                             build.abstract_params(cfg)))
  params['norm']['weight'][:] = np.nan
  with pytest.raises(checkpoint.CheckpointError, match='NaN or inf'):
    checkpoint.save_model_dir(tmp_path / 'refused', cfg, params)
  # A directory written without that check (an older version) is refused when loaded.
  shutil.copytree(trained / 'model', tmp_path / 'old', ignore=shutil.ignore_patterns('params'))
  writer = ocp.StandardCheckpointer()
  writer.save(tmp_path / 'old' / 'params', params)
  writer.wait_until_finished()
  with pytest.raises(checkpoint.CheckpointError, match='NaN or inf'):
    Generator.load(tmp_path / 'old')


# --- preemption --------------------------------------------------------------------------------


def test_sigterm_saves_within_about_a_step_whatever_log_every_is(tmp_path, monkeypatch):
  """Used to save only at the next host sync (a log step): minutes at the released settings."""
  step_seconds, events = 0.5, {}
  original = ar_steps.train_step

  def tick(step):
    time.sleep(step_seconds)
    if int(step) == 4:
      events['signal'] = (time.monotonic(), int(step))
      os.kill(os.getpid(), signal.SIGTERM)

  def slow_step(settings, state, batch, key):
    new, metrics = original(settings, state, batch, key)
    jax.debug.callback(tick, new['step'], ordered=True)
    return new, metrics

  saved = []
  original_save = checkpoints.TrainCheckpointer.save

  def save(self, step, *args, **kwargs):
    saved.append((time.monotonic(), int(step)))
    return original_save(self, step, *args, **kwargs)

  monkeypatch.setattr(ar_steps, 'train_step', slow_step)
  monkeypatch.setattr(checkpoints.TrainCheckpointer, 'save', save)
  config = _ar_config(**{'optim.total_steps': 60, 'ckpt_every': 1000, 'log_every': 1000})
  commands.run(config, str(tmp_path))
  signal_time, signal_step = events['signal']
  save_time, save_step = saved[0]
  assert save_step <= signal_step + 2, (signal_step, save_step)
  assert save_time - signal_time < 3.5 * step_seconds, save_time - signal_time
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == [str(save_step)]
