"""Training throughput of the tokenizer and the AR model, measured by one command.

    python -m alitok_jax.commands.benchmark_train --out docs/perf_train.json          # on a GPU
    python -m alitok_jax.commands.benchmark_train --tiny --out /tmp/perf_train.json   # CPU smoke

Each measurement runs the trainers' own jitted steps (`tokenizer_steps`, `ar_steps`) on random
weights and random data already on the device, bf16 compute and float32 params: median of
--runs timed calls after a warm-up, peak device memory (`memory_stats()['peak_bytes_in_use']`,
each measurement in its own process), and the reference's figure on the same H100
(../shared/reference/baseline_reference_h100.json):
- tokenizer stage 1 at batch 48: MSE + prefix + quantizer + ConvNeXt-S perceptual (random
  weights: speed does not depend on them), with clustering; with the GAN on, generator and
  discriminator iterations alternate, and images/s counts both (as the reference's 184.2 does);
- AR-B at per-GPU batch 128, AR-L at 64, AR-XL at 32 (the released configs' per-GPU batches):
  tokens/s and MFU, counting 6 x params x tokens + 12 x layers x width x seq x tokens FLOPs
  against 989 TFLOP/s (bf16 dense H100), as the baseline json does.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import statistics
import subprocess
import sys
import time

REFERENCE = {'tok_stage1_gan': 184.2, 'tok_stage1': 206.3, 'ar_B_tokens_s': 83106,
             'ar_L_tokens_s': 58365, 'ar_XL_tokens_s': 29646}
PEAK_FLOPS = 989e12


def _peak_memory() -> int | None:
  import jax  # pylint: disable=import-outside-toplevel
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use')


def _time(fn, runs: int) -> tuple[float, float, list[float]]:
  import jax  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  jax.block_until_ready(fn())
  compile_s = time.perf_counter() - start
  jax.block_until_ready(fn())
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return compile_s, statistics.median(times), times


def measure_tokenizer(model: str, batch: int, gan: bool, perceptual: str, runs: int,
                      dtype: str) -> dict:
  """images/s of stage-1 training iterations (a generator + discriminator pair when gan)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from alitok_jax.models import build, convnext, discriminator, variants  # pylint: disable=import-outside-toplevel
  from alitok_jax.train import optim, tokenizer_steps as steps  # pylint: disable=import-outside-toplevel

  cfg = variants.TOKENIZER[model]
  compute = jnp.dtype(dtype)
  tx = optim.adamw(b1=0.9, b2=0.999, weight_decay=0.01)
  dcfg = discriminator.DISCRIMINATOR['tiny' if model.startswith('tiny') else 'reference']
  init = steps.make_init_fn(cfg, tx, clustering=True, disc_cfg=dcfg if gan else None,
                            disc_tx=tx if gan else None)
  state = jax.jit(init, static_argnums=0)(0, None)
  aux, perceptual_gd = {}, None
  if perceptual:
    net = convnext.ConvNeXt(convnext.CONVNEXT[perceptual], rngs=nnx.Rngs(0))
    perceptual_gd, net_state = nnx.split(net)
    aux['perceptual'] = nnx.to_pure_dict(net_state)
  disc_gd = (nnx.split(nnx.eval_shape(lambda: discriminator.Discriminator(
      dcfg, dtype=compute, rngs=nnx.Rngs(0))))[0] if gan else None)
  settings = steps.StepSettings(
      model=build.abstract(cfg, dtype=compute)[0], disc=disc_gd, perceptual=perceptual_gd,
      lpips=False, schedule=optim.phased_schedule(1e-4, 0, [optim.Phase('p', 10, 1e-4)]), tx=tx,
      disc_tx=tx if gan else None, stage=1, clustering=True,
      disc_schedule=optim.phased_schedule(1e-4, 0, [optim.Phase('p', 10, 1e-4)]),
      perceptual_weight=1.0 if perceptual else 0.0, gan=gan)
  g = jax.jit(functools.partial(steps.generator_step, settings), donate_argnums=0)
  d = jax.jit(functools.partial(steps.discriminator_step, settings), donate_argnums=0)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, cfg.image_size,
                                                                   cfg.image_size, 3), np.uint8))
  holder = {'state': state}

  def iteration():
    holder['state'], m = g(holder['state'], aux, {'image': images})
    if gan:
      holder['state'], m = d(holder['state'], aux, {'image': images})
    return m

  compile_s, median, times = _time(iteration, runs)
  per_call = 2 if gan else 1
  return {'what': f'tokenizer {model} stage 1' + (' + GAN' if gan else ''), 'batch': batch,
          'dtype': dtype, 'device': jax.devices()[0].device_kind,
          'images_per_s': per_call * batch / median, 'seconds_per_iteration': median / per_call,
          'peak_memory_bytes': _peak_memory(), 'compile_s': compile_s, 'times': times,
          'reference_images_per_s': REFERENCE['tok_stage1_gan' if gan else 'tok_stage1']}


def measure_ar(variant: str, batch: int, runs: int, dtype: str, accum: int,
               remat: bool = False) -> dict:
  """tokens/s and MFU of one AR training step (forward + backward + clip + AdamW)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from alitok_jax.models import build, variants  # pylint: disable=import-outside-toplevel
  from alitok_jax.train import ar_steps, nonfinite, optim  # pylint: disable=import-outside-toplevel

  cfg = variants.AR[variant]
  tx = optim.adamw(b1=0.9, b2=0.96, weight_decay=0.03, grad_clip=1.0,
                   decay_mask=optim.decay_mask_matrices(build.abstract_params(cfg)))
  params = jax.jit(lambda: build.random_params(cfg))()
  state = {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt': jax.jit(tx.init)(params),
           nonfinite.COUNTERS: nonfinite.initial_counters()}
  settings = ar_steps.ARStepSettings(build.abstract(cfg, dtype=jnp.dtype(dtype))[0], cfg,
                                     optim.warmup_cosine(4e-4, 10, 100, 1e-5), tx, accum,
                                     remat)
  step = jax.jit(functools.partial(ar_steps.train_step, settings), donate_argnums=0)
  rng = np.random.default_rng(0)
  batch_data = {'codes': jnp.asarray(rng.integers(0, cfg.codebook_size, (batch, cfg.image_seq_len),
                                                  dtype=np.int32)),
                'label': jnp.asarray(rng.integers(0, cfg.num_classes, (batch,), dtype=np.int32))}
  key = jax.random.key(0)
  holder = {'state': state}

  def run():
    holder['state'], m = step(holder['state'], batch_data, key)
    return m

  compile_s, median, times = _time(run, runs)
  tokens = batch * cfg.seq_len  # as the baseline json counts (274 positions)
  n_params = build.count_params(cfg)
  flops = 6 * n_params * tokens + 12 * cfg.depth * cfg.width * cfg.seq_len * tokens
  what = (f'AR-{variant} training step' + (f', {accum} micro-batches' if accum > 1 else '')
          + (', remat' if remat else ''))
  return {'what': what, 'batch': batch, 'accum_steps': accum,
          'dtype': dtype, 'device': jax.devices()[0].device_kind, 'tokens_per_s': tokens / median,
          'step_s': median, 'mfu_vs_989tf': flops / median / PEAK_FLOPS,
          'peak_memory_bytes': _peak_memory(), 'compile_s': compile_s, 'times': times,
          'reference_tokens_per_s': REFERENCE.get(f'ar_{variant}_tokens_s')}


def _child(args: list[str]) -> dict:
  """Runs one measurement in a fresh process (so peak memory is that measurement's)."""
  cmd = [sys.executable, '-m', 'alitok_jax.commands.benchmark_train', '--child', *args]
  out = subprocess.run(cmd, capture_output=True, text=True)
  if out.returncode:
    return {'what': ' '.join(args), 'error': out.stderr.strip().splitlines()[-1:]}
  return json.loads(out.stdout.strip().splitlines()[-1])


def _row(r: dict) -> str:
  if 'error' in r:
    return f'| {r["what"]} | failed: {r["error"]} |'
  gib = f'{r["peak_memory_bytes"] / 2**30:.1f} GiB' if r.get('peak_memory_bytes') else 'n/a'
  if 'tokens_per_s' in r:
    ref = r.get('reference_tokens_per_s')
    speedup = f'{r["tokens_per_s"] / ref:.2f}x' if ref else ''
    return (f'| {r["what"]} (batch {r["batch"]}) | {r["tokens_per_s"]:,.0f} tokens/s, MFU '
            f'{100 * r["mfu_vs_989tf"]:.1f}% | {ref or "n/a"} | {speedup} | {gib} |')
  ref = r['reference_images_per_s']
  return (f'| {r["what"]} (batch {r["batch"]}) | {r["images_per_s"]:.1f} images/s | {ref} | '
          f'{r["images_per_s"] / ref:.2f}x | {gib} |')


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m alitok_jax.commands.benchmark_train',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--tiny', action='store_true', help='CPU-sized models (a smoke run)')
  parser.add_argument('--runs', type=int, default=5)
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--out', default='')
  parser.add_argument('--child', nargs='*', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    kind, *rest = args.child
    if kind == 'tok':
      model, batch, gan, perceptual = rest
      r = measure_tokenizer(model, int(batch), gan == '1', perceptual, args.runs, args.dtype)
    else:
      variant, batch, accum, remat = rest
      r = measure_ar(variant, int(batch), args.runs, args.dtype, int(accum), remat == '1')
    print(json.dumps(r))
    return
  runs = ['--runs', str(args.runs), '--dtype', args.dtype, '--child']
  if args.tiny:
    plan = [['tok', 'tiny_stage1', '2', '0', ''], ['tok', 'tiny_stage1', '2', '1', 'tiny_random'],
            ['ar', 'tiny', '4', '1', '0'], ['ar', 'tiny', '4', '2', '1']]
  else:
    plan = [['tok', 'stage1', '48', '0', 'small'], ['tok', 'stage1', '48', '1', 'small'],
            ['ar', 'B', '128', '1', '0'], ['ar', 'L', '64', '1', '0'], ['ar', 'XL', '32', '1', '0'],
            ['ar', 'XL', '32', '1', '1']]
  results = []
  print('| measurement | ours | reference (H100) | speed-up | peak memory |')
  print('| --- | --- | --- | --- | --- |')
  for p in plan:
    r = _child(runs + p)
    results.append(r)
    print(_row(r), flush=True)
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(results, indent=1) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
