"""The trainers' building blocks: schedules, optimizer masks, mesh rules, checkpoints, writers."""

from __future__ import annotations


import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alitok_jax.parallel import mesh as mesh_lib
from alitok_jax.train import checkpoints, loop, optim, tokenizer_init
from alitok_jax.train.metric_writers import MetricWriter, read_metrics
from alitok_jax.models import build, variants


def test_phased_schedule_warms_up_then_ramps_each_phase():
  phases = [optim.Phase('a', 100, 1e-4), optim.Phase('b', 200, 2e-5), optim.Phase('c', 100, 2e-6)]
  lr = optim.phased_schedule(1e-4, 10, phases)
  assert float(lr(0)) == 0.0  # warm-up n / 10: the first step has rate 0, as the reference's
  np.testing.assert_allclose(float(lr(1)), 1e-5, rtol=1e-5)
  np.testing.assert_allclose(float(lr(9)), 9e-5, rtol=1e-5)
  np.testing.assert_allclose(float(lr(50)), 1e-4, rtol=1e-5)
  np.testing.assert_allclose(float(lr(200)), 1e-4 + (2e-5 - 1e-4) * 0.5, rtol=1e-5)
  np.testing.assert_allclose(float(lr(300)), 2e-5, rtol=1e-5)
  np.testing.assert_allclose(float(lr(400)), 2e-6, rtol=1e-4)
  np.testing.assert_allclose(float(lr(10_000)), 2e-6, rtol=1e-4)
  assert [optim.phase_index(phases, s) for s in (0, 99, 100, 299, 300, 399, 500)] == [
      0, 0, 1, 1, 2, 2, 2]


def test_phases_reject_bad_fields():
  with pytest.raises(ValueError, match='unknown phase fields'):
    optim.phases_from_config([dict(name='x', steps=1, lr=1.0, lpips=1.0)])
  with pytest.raises(ValueError, match='at least one'):
    optim.phases_from_config([dict(name='x', steps=0, lr=1.0)])


def test_warmup_cosine_reaches_floor():
  lr = optim.warmup_cosine(4e-4, 10, 110, 1e-5)
  assert float(lr(0)) == 0.0  # warm-up n / 10, as the reference's
  np.testing.assert_allclose(float(lr(9)), 3.6e-4, rtol=1e-6)
  np.testing.assert_allclose(float(lr(10)), 4e-4, rtol=1e-6)
  np.testing.assert_allclose(float(lr(60)), 1e-5 + 0.5 * (4e-4 - 1e-5), rtol=1e-5)
  np.testing.assert_allclose(float(lr(110)), 1e-5, rtol=1e-5)


def test_ar_weight_decay_only_on_matrices_outside_embeddings():
  mask = optim.decay_mask_matrices(build.abstract_params(variants.AR['tiny']))
  assert mask['embeddings']['embedding'] is False
  assert mask['blocks'][0]['attn']['qkv']['kernel'] is True
  assert mask['blocks'][0]['attn']['qkv']['bias'] is False
  assert mask['norm']['weight'] is False


def test_set_learning_rate_changes_the_update():
  params = {'w': jnp.ones((3, 3))}
  tx = optim.adamw(b1=0.9, b2=0.96, weight_decay=0.0, grad_clip=1.0)
  state = tx.init(params)
  grads = {'w': jnp.full((3, 3), 0.5)}
  small = tx.update(grads, optim.set_learning_rate(state, 1e-3), params)[0]
  large = tx.update(grads, optim.set_learning_rate(state, 1e-1), params)[0]
  assert np.all(np.asarray(small['w']) < -1e-4)
  np.testing.assert_allclose(np.asarray(large['w']), 100 * np.asarray(small['w']), rtol=1e-5)
  no_clip = optim.adamw(b1=0.9, b2=0.96, weight_decay=0.0)
  update = no_clip.update(grads, optim.set_learning_rate(no_clip.init(params), 1e-2), params)[0]
  np.testing.assert_allclose(np.asarray(update['w']), -1e-2, rtol=1e-4)


def test_fsdp_rule_shards_largest_divisible_dimension():
  assert mesh_lib.fsdp_spec((1024, 4096), 8, 1000) == jax.sharding.PartitionSpec(None, 'fsdp')
  assert mesh_lib.fsdp_spec((4096, 1000), 8, 1000) == jax.sharding.PartitionSpec('fsdp', None)
  assert mesh_lib.fsdp_spec((10,), 8, 1) == jax.sharding.PartitionSpec()  # not divisible
  assert mesh_lib.fsdp_spec((4096, 4096), 8, 2**30) == jax.sharding.PartitionSpec()  # small
  assert mesh_lib.fsdp_spec((4096, 4096), 1, 1) == jax.sharding.PartitionSpec()


def test_mesh_errors_name_the_device_count():
  with pytest.raises(ValueError, match='divide'):
    mesh_lib.make_mesh(mesh_lib.MeshSpec(fsdp=3))
  mesh = mesh_lib.make_mesh()
  assert mesh.devices.size == jax.device_count()
  assert mesh_lib.local_batch_size(4 * jax.device_count(), mesh) == 4 * jax.device_count()


def test_checkpoint_restores_state_and_data_position(tmp_path):
  ds = grain.MapDataset.range(100).shuffle(seed=3).batch(4)
  it = iter(ds.to_iter_dataset())
  for _ in range(3):
    next(it)
  state = {'step': jnp.asarray(3, jnp.int32), 'w': jnp.arange(6.0).reshape(2, 3)}
  ckpt = checkpoints.TrainCheckpointer(tmp_path / 'ckpt', keep=2)
  ckpt.save(3, state, it)
  expected = [next(it) for _ in range(2)]
  ckpt.close()

  fresh = iter(ds.to_iter_dataset())
  ckpt = checkpoints.TrainCheckpointer(tmp_path / 'ckpt', keep=2)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
  step, restored = ckpt.restore(abstract, fresh)
  assert step == 3
  np.testing.assert_array_equal(np.asarray(restored['w']), np.asarray(state['w']))
  for e in expected:
    np.testing.assert_array_equal(next(fresh), e)
  ckpt.close()


def test_preemption_guard_catches_sigterm():
  import os
  import signal
  with checkpoints.PreemptionGuard() as guard:
    assert not guard.should_stop()
    os.kill(os.getpid(), signal.SIGTERM)
    assert guard.should_stop() and guard.signal_name == 'SIGTERM'


def test_metric_writer_jsonl_and_png(tmp_path, capsys):
  w = MetricWriter(tmp_path, tensorboard=True)
  w.write_scalars(5, {'loss': 1.5, 'lr': jnp.asarray(1e-4)})
  paths = w.write_images(5, {'grid': np.zeros((8, 8, 3), np.uint8)})
  w.close()
  records = read_metrics(tmp_path)
  assert records[0]['step'] == 5 and records[0]['loss'] == 1.5
  assert abs(records[0]['lr'] - 1e-4) < 1e-10
  assert paths[0].exists() and paths[0].name == 'grid_00000005.png'
  assert '[step 5] loss=1.5000' in capsys.readouterr().out
  assert any((tmp_path / 'tensorboard').iterdir())


def test_metric_window_averages_and_throughput():
  window = loop.MetricWindow()
  window.add({'a': jnp.asarray(1.0)})
  window.add({'a': jnp.asarray(3.0), 'b': jnp.asarray(2.0)})
  assert window.mean() == {'a': 2.0, 'b': 2.0}
  assert window.mean() == {}
  assert loop.every(10, 5) and not loop.every(11, 5) and loop.every(11, 5, last=11)
  assert not loop.every(10, 0)


def test_stage2_initialisation_follows_the_reference_rule():
  stage1 = jax.tree.map(np.asarray, build.random_params(variants.TOKENIZER['tiny_stage1'], seed=1))
  fresh = jax.tree.map(np.asarray, build.random_params(variants.TOKENIZER['tiny_stage2'], seed=2))
  params, kept_fresh, dropped = tokenizer_init.carry_matching(stage1, fresh)
  assert kept_fresh == ['decoder.class_embedding', 'decoder.latent_token_positional_embedding']
  assert dropped == ['decoder.conv_out_aux.bias', 'decoder.conv_out_aux.kernel',
                     'decoder.ffn_aux.bias', 'decoder.ffn_aux.kernel']
  np.testing.assert_array_equal(params['encoder']['conv_out']['kernel'],
                                stage1['encoder']['conv_out']['kernel'])
  np.testing.assert_array_equal(params['decoder']['transformer'][1]['mlp']['c_fc']['kernel'],
                                stage1['decoder']['transformer'][1]['mlp']['c_fc']['kernel'])
  np.testing.assert_array_equal(params['decoder']['class_embedding'],
                                fresh['decoder']['class_embedding'])
  build.check_params(variants.TOKENIZER['tiny_stage2'], params)


def test_mesh_helpers_for_padding_and_process_rows():
  assert (mesh_lib.round_up(5, 4), mesh_lib.round_up(8, 4), mesh_lib.round_up(0, 4)) == (8, 8, 0)
  x = np.arange(6).reshape(3, 2)
  np.testing.assert_array_equal(mesh_lib.pad_rows(x, 5), [[0, 1], [2, 3], [4, 5], [0, 0], [0, 0]])
  np.testing.assert_array_equal(mesh_lib.pad_rows(x, 4, repeat_last=True)[3], [4, 5])
  assert mesh_lib.pad_rows(x, 3) is x
  y = mesh_lib.pad_rows(jnp.asarray(x), 4, repeat_last=True)
  assert isinstance(y, jax.Array) and y.shape == (4, 2)
  with pytest.raises(ValueError, match='cannot pad 3 rows to 2'):
    mesh_lib.pad_rows(x, 2)
  assert mesh_lib.local_rows(8, 4, 10) == (8, 10)  # one process: all rows of the batch
  mesh = mesh_lib.data_mesh()
  assert mesh.axis_names == ('data',) and mesh.size == jax.device_count()


def test_held_out_batches_pad_or_drop_the_last():
  arrays = {'x': np.arange(10)}
  full = [(b['x'].tolist(), n) for b, n in loop.held_out_batches(arrays, 4, 4, keep_partial=False)]
  assert full == [([0, 1, 2, 3], 4), ([4, 5, 6, 7], 4)]
  padded = [(b['x'].tolist(), n) for b, n in loop.held_out_batches(arrays, 4, 4, keep_partial=True)]
  assert padded[-1] == ([8, 9, 9, 9], 2) and len(padded) == 3
  assert not list(loop.held_out_batches({'x': np.arange(3)}, 4, 4, keep_partial=False))
