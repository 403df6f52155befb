"""The same results on 8 (fake CPU) devices as on 1: the quantiser's clustered-codebook update
over a sharded global batch, and the tokenizer / AR forward passes with a sharded batch.

Runs in a subprocess (`isolated.run`), because the device count is fixed when JAX starts.
"""

from __future__ import annotations

import isolated
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from alitok_jax import Generator, Tokenizer
from alitok_jax.models import ar as ar_lib
from alitok_jax.models import quantizer, variants


def check_eight_devices_equal_one():
  """(run by isolated.run on 8 fake devices) see the module docstring."""
  assert jax.device_count() == 8, jax.devices()
  # Auto (GSPMD) axes, as the package's meshes use: XLA propagates shardings through gathers
  # and scatters (jax >= 0.10 defaults to Explicit axes, which would need annotations there).
  mesh = jax.make_mesh((8,), ('data',), axis_types=(AxisType.Auto,))
  batch = NamedSharding(mesh, P('data'))
  replicated = NamedSharding(mesh, P())

  # Clustered codebook update: tokens of the whole batch sharded over 8 devices.
  rng = np.random.default_rng(0)
  codebook = rng.normal(size=(64, 8)).astype(np.float32)
  usage = rng.random(64).astype(np.float32) * 1e-3
  z = rng.normal(size=(16, 20, 8)).astype(np.float32)
  update = jax.jit(quantizer.clustered_codebook_update)
  one = update(codebook, usage, z)
  eight = update(jax.device_put(codebook, replicated), jax.device_put(usage, replicated),
                 jax.device_put(z, batch))
  for a, b in zip(one, eight):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)

  # Tokenizer and AR forward with the batch sharded.
  tok = Tokenizer.random(variants.TOKENIZER['tiny_stage1'], seed=0).module()
  images = rng.random((8, 256, 256, 3)).astype(np.float32)
  f = jax.jit(lambda x: tok(x))
  r1, p1, q1 = f(images)
  r8, p8, q8 = f(jax.device_put(images, batch))
  np.testing.assert_array_equal(np.asarray(q1.codes), np.asarray(q8.codes))
  np.testing.assert_allclose(np.asarray(r1), np.asarray(r8), atol=1e-6)
  gen = Generator.random(variants.AR['tiny'], seed=0).module()
  tokens = ar_lib.teacher_forced_tokens(jnp.asarray(rng.integers(0, 4096, (8, 273))),
                                        jnp.arange(8), variants.AR['tiny'])
  g = jax.jit(lambda t: gen(t)[0])
  np.testing.assert_allclose(np.asarray(g(tokens)), np.asarray(g(jax.device_put(tokens, batch))),
                             atol=1e-5)


def test_eight_devices_equal_one():
  isolated.run('test_sharding:check_eight_devices_equal_one', devices=8)
