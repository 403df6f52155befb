"""Sampling throughput and bf16 accuracy by one command, with the floor beside each figure.

    python -m alitok_jax.commands.benchmark_sample --out docs/perf_sample.json \
        --fixtures ../shared/fixtures                                                 # on a GPU
    python -m alitok_jax.commands.benchmark_sample --tiny --out /tmp/perf_tiny.json   # CPU smoke
    python -m alitok_jax.commands.benchmark_sample --sweep --variants B   # tune the decode loop
    python -m alitok_jax.commands.benchmark_sample --res 512 --variants L,XL  # 1,057 codes
    python -m alitok_jax.commands.benchmark_sample --floors --res 512     # floors only, no device

Measures (DESIGN.md "Performance"):
- AR sampling, B / L / XL at batch 64 with CFG (2B rows), bf16, random weights: images/s from the
  median of --runs timed calls after a warm-up (compile + one run), peak device memory
  (`memory_stats()['peak_bytes_in_use']`; each measurement runs in its own process, so the peak
  is that model's) next to `train/memory.py:sample_bytes`'s estimate, and the floor: per batch,
  the weights once per step (params x 2 bytes x L) plus the KV cache up to the current position
  once per step (2B rows x layers x 2 (k, v) x width x 2 bytes x (1 + 2 + ... + L) ~= L^2 / 2),
  over the device's memory bandwidth; L = 273 codes at `--res 256` (the default), 1,057 at
  `--res 512` (the models via `models/variants.py:sized`);
- tokenizer decoding (stage 2, full size, at --res) at batch 64 in bf16: images/s;
- bf16 against float32: on the tiny AR fixture (`--fixtures DIR` holding ar.pth and ar_io.npz,
  e.g. ../shared/fixtures), the fraction of greedy codes (CFG 4.0 / 1.4, top_k=1) that agree,
  free-running and teacher-forced; on a random-weight AR-B, the mean absolute difference of
  teacher-forced logits (always at 256 pixels: the fixture's size).
Reference figures: at 256 pixels the reference PyTorch code on our H100
(../shared/reference/baseline_reference_h100.json): AR-B 8.18, L 7.39, XL 6.22 images/s
(fp32/tf32), tokenizer decode 1540 images/s (bf16). At 512 pixels there is no reference-code
measurement; the column holds the paper's Table 12 instead (AliTok-XL, batch 64 with CFG, on the
paper's GPU, not our H100): 100.67 s per batch = 0.636 images/s, 48.33 GB (256: 10.07 s = 6.36
images/s, 15.48 GB). `--floors` prints the floors and memory estimates alone, on any machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

# Memory bandwidth used for the floor, bytes/s: about 90% of the datasheet figure, as DESIGN.md's
# ~3 TB/s for the H100 SXM (3.35 TB/s). Matched against `device_kind` in order.
BANDWIDTH = (('H100 PCIe', 1.8e12), ('H100', 3.0e12), ('H200', 4.3e12), ('GH200', 3.6e12),
             ('A100', 1.8e12))
REFERENCE_IMAGES_PER_S = {'B': 8.18, 'L': 7.39, 'XL': 6.22, 'decode': 1540.4}
# The paper's Table 12 (sampling cost of AliTok-XL, batch 64 with CFG, one GPU of the paper's):
# seconds per batch and GB by resolution. At 512 it is the only reference there is.
PAPER_TABLE12 = {256: {'seconds_per_batch': 10.07, 'memory_gb': 15.48, 'batch': 64},
                 512: {'seconds_per_batch': 100.67, 'memory_gb': 48.33, 'batch': 64}}


def reference_of(variant: str, res: int) -> tuple[float | None, str]:
  """(images/s, where it comes from) to print next to a measurement: the reference code on our
  H100 at 256 pixels, the paper's Table 12 (XL only) at 512."""
  if res == 256:
    return REFERENCE_IMAGES_PER_S.get(variant), 'reference code, H100'
  paper = PAPER_TABLE12.get(res)
  if variant == 'XL' and paper:
    return paper['batch'] / paper['seconds_per_batch'], 'paper Table 12'
  return None, ''


def ar_config(variant: str, res: int):
  """The AR variant at `res` pixels (1,057 codes at 512)."""
  from alitok_jax.models import variants  # noqa: PLC0415

  return variants.sized(variants.AR[variant], image_size=res)


def tokenizer_config(name: str, res: int):
  from alitok_jax.models import variants  # noqa: PLC0415

  return variants.sized(variants.TOKENIZER[name], image_size=res)


def bandwidth_of(device_kind: str) -> float | None:
  for name, bw in BANDWIDTH:
    if name.lower() in device_kind.lower():
      return bw
  return None


def floor_bytes(config, batch: int, bytes_per_value: int = 2, guided: bool = True) -> dict:
  """DESIGN.md's floor for one batch: weights once per step + the filled KV cache once per step."""
  from alitok_jax.models import build  # noqa: PLC0415

  steps = config.image_seq_len
  rows = 2 * batch if guided else batch
  weights = build.count_params(config) * bytes_per_value * steps
  per_position = rows * config.depth * 2 * config.width * bytes_per_value
  kv = per_position * steps * (steps + 1) // 2
  return {'weight_bytes': weights, 'kv_bytes': kv, 'total_bytes': weights + kv}


def _peak_memory() -> int | None:
  import jax  # noqa: PLC0415

  stats = jax.local_devices()[0].memory_stats()
  return None if not stats else stats.get('peak_bytes_in_use')


def _time(fn, runs: int) -> tuple[float, float, list[float]]:
  """(first call incl. compile, median of `runs` after one more warm-up call, all times) seconds."""
  t = time.perf_counter()
  fn(0).block_until_ready()
  compile_s = time.perf_counter() - t
  fn(1).block_until_ready()
  times = []
  for i in range(runs):
    t = time.perf_counter()
    fn(2 + i).block_until_ready()
    times.append(time.perf_counter() - t)
  return compile_s, statistics.median(times), times


# ------------------------------------------------------------------------------------------------
# Measurements, each run in a child process.


def measure_sampler(variant: str, batch: int, dtype: str, segments: int, attention: str,
                    runs: int, res: int = 256) -> dict:
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from alitok_jax import Generator  # noqa: PLC0415
  from alitok_jax.models import build  # noqa: PLC0415
  from alitok_jax.train import memory  # noqa: PLC0415

  cfg = ar_config(variant, res)
  params = build.random_params(cfg, seed=0)
  # The reference zero-initialises the head; random logits make the draws realistic.
  kernel = params['output']['kernel']
  params['output']['kernel'] = 0.02 * jax.random.normal(jax.random.key(1), kernel.shape)
  gen = Generator(cfg, params, dtype=dtype)
  labels = np.arange(batch) % cfg.num_classes
  device = jax.local_devices()[0]

  def run(seed):
    return gen.sample(labels, 4.0, 1.4, seed=seed, segments=segments, attention=attention,
                      devices=[device])

  compile_s, median, times = _time(run, runs)
  value_bytes = 4 if dtype == 'float32' else 2
  floor = floor_bytes(cfg, batch, value_bytes)
  bw = bandwidth_of(device.device_kind)
  reference, source = reference_of(variant, res)
  return {
      'what': 'sample', 'variant': variant, 'res': res, 'codes': cfg.image_seq_len,
      'batch': batch, 'dtype': dtype, 'cfg': True,
      'segments': segments, 'attention': attention, 'device': device.device_kind,
      'images_per_s': batch / median, 'seconds_per_batch': median,
      'ms_per_step': 1e3 * median / cfg.image_seq_len, 'times': times, 'compile_s': compile_s,
      'peak_bytes': _peak_memory(),
      'estimate_bytes': memory.sample_bytes(cfg, batch, dtype_bytes=value_bytes)['total'],
      **floor,
      'floor_images_per_s': None if bw is None else batch * bw / floor['total_bytes'],
      'reference_images_per_s': reference, 'reference_source': source,
  }


def measure_decode(tokenizer: str, batch: int, dtype: str, runs: int, res: int = 256) -> dict:
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from alitok_jax import Tokenizer  # noqa: PLC0415
  from alitok_jax.sample import decode  # noqa: PLC0415
  from alitok_jax.train import memory  # noqa: PLC0415

  cfg = tokenizer_config(tokenizer, res)
  tok = Tokenizer.random(cfg, seed=0, dtype=dtype)
  device = jax.local_devices()[0]
  decoder = decode.Decoder(tok, devices=[device])
  rng = np.random.default_rng(0)
  shape = (batch, cfg.num_latent_tokens)
  codes = [jax.device_put(rng.integers(0, cfg.codebook_size, shape).astype(np.int32), device)
           for _ in range(3)]
  compile_s, median, times = _time(lambda i: decoder(codes[i % 3]), runs)
  return {'what': 'decode', 'tokenizer': tokenizer, 'res': res, 'codes': cfg.num_latent_tokens,
          'batch': batch, 'dtype': dtype,
          'device': device.device_kind, 'images_per_s': batch / median,
          'seconds_per_batch': median, 'times': times, 'compile_s': compile_s,
          'peak_bytes': _peak_memory(),
          'estimate_bytes': memory.decode_bytes(
              cfg, batch, dtype_bytes=4 if dtype == 'float32' else 2)['total'],
          'reference_images_per_s': REFERENCE_IMAGES_PER_S['decode'] if res == 256 else None}


def measure_accuracy(variant: str, positions: int, fixtures: str) -> dict:
  """bf16 vs float32: greedy agreement on the AR fixture in `fixtures` (if given); logits
  difference on a random model."""
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from alitok_jax import Generator  # noqa: PLC0415
  from alitok_jax.models import build, variants  # noqa: PLC0415

  out = {'what': 'accuracy', 'device': jax.local_devices()[0].device_kind}
  fixtures = pathlib.Path(fixtures) if fixtures else None
  if fixtures is not None and not (fixtures / 'ar.pth').is_file():
    raise FileNotFoundError(f'--fixtures {fixtures}: no ar.pth there')
  if fixtures is None:
    out['fixture'] = 'not measured (pass --fixtures DIR with ar.pth and ar_io.npz)'
  else:
    from alitok_jax.convert.run import torch_to_model_dir  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
      torch_to_model_dir(fixtures / 'ar.pth', pathlib.Path(tmp) / 'ar')
      f32 = Generator.load(pathlib.Path(tmp) / 'ar')
      bf16 = Generator.load(pathlib.Path(tmp) / 'ar', dtype='bfloat16')
    with np.load(fixtures / 'ar_io.npz') as f:
      labels, greedy = f['labels'], f['greedy_ids']
    settings = dict(guidance_scale=4.0, guidance_pow=1.4, top_k=1)
    codes32 = np.asarray(f32.sample(labels, **settings))
    codes16 = np.asarray(bf16.sample(labels, **settings))
    differs = codes16 != codes32
    # Teacher-forced: the bf16 model's greedy choice given the float32 greedy prefix.
    p16 = np.asarray(bf16.guided_probs(codes32, labels, 4.0, 1.4))
    out['fixture'] = {
        'float32_equals_reference_greedy': bool((codes32 == greedy).all()),
        'free_running_agreement': float(1 - differs.mean()),
        'first_divergence_step': [int(np.argmax(d)) if d.any() else None for d in differs],
        'teacher_forced_agreement': float((p16.argmax(-1) == codes32).mean()),
    }
  cfg = variants.AR[variant]
  params = build.random_params(cfg, seed=0)
  # Every weight N(0, 0.02) as the reference initialises them, the zero-initialised head too.
  kernel = params['output']['kernel']
  params['output']['kernel'] = 0.02 * jax.random.normal(jax.random.key(1), kernel.shape)
  rng = np.random.default_rng(0)
  codes = rng.integers(0, cfg.codebook_size, (2, cfg.image_seq_len))[:, :positions - 1]
  from alitok_jax.models import ar as ar_lib  # noqa: PLC0415

  tokens = ar_lib.teacher_forced_tokens(codes, np.array([3, 917]), cfg)
  logits = {}
  for dtype in ('float32', 'bfloat16'):
    model = Generator(cfg, params, dtype=dtype).module()
    logits[dtype] = np.asarray(jax.jit(lambda t, m=model: m(t)[0])(tokens))
  diff = np.abs(logits['bfloat16'] - logits['float32'])
  out['random_' + variant] = {
      'positions': int(tokens.shape[1]), 'batch': 2,
      'mean_abs_logit_diff': float(diff.mean()), 'max_abs_logit_diff': float(diff.max()),
      'mean_abs_logit': float(np.abs(logits['float32']).mean()),
      'logit_std': float(logits['float32'].std()),
      'argmax_agreement': float((logits['bfloat16'].argmax(-1)
                                 == logits['float32'].argmax(-1)).mean()),
  }
  return out


# ------------------------------------------------------------------------------------------------
# The parent: runs each measurement in a fresh process, prints a table, writes JSON.


def _child(args: list[str]) -> dict:
  cmd = [sys.executable, '-m', 'alitok_jax.commands.benchmark_sample', '--child', *args]
  print('  $ ' + ' '.join(cmd[2:]), flush=True)
  result = subprocess.run(cmd, capture_output=True, text=True)
  lines = [l for l in result.stdout.splitlines() if l.startswith('RESULT ')]
  if result.returncode != 0 or not lines:
    return {'what': 'error', 'args': args, 'error': result.stderr[-2000:]}
  return json.loads(lines[-1][len('RESULT '):])


def _fmt(x, spec: str, none: str = 'n/a') -> str:
  return none if x is None else format(x, spec)


def _px(r: dict) -> str:
  """'' at 256 pixels (the default), ', 512 px' otherwise."""
  res = r.get('res', 256)
  return '' if res == 256 else f', {res} px'


def _gib(x) -> str:
  return _fmt(x and x / 2**30, '.1f')


def _table(results: list[dict]) -> str:
  rows = ['| what | batch | dtype | segments / attention | images/s | ms/step | peak GiB | '
          'estimate GiB | floor images/s | of floor | reference images/s | compile s |',
          '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in results:
    ref = r.get('reference_images_per_s')
    ref = '-' if ref is None else f"{ref:.2f}" + (
        ' (paper)' if r.get('reference_source') == 'paper Table 12' else '')
    if r['what'] == 'sample':
      floor = r['floor_images_per_s']
      rows.append(
          f"| AR-{r['variant']} sample, CFG{_px(r)} | {r['batch']} | {r['dtype']} | "
          f"{r['segments']} / {r['attention']} | {r['images_per_s']:.1f} | "
          f"{r['ms_per_step']:.2f} | {_gib(r['peak_bytes'])} | {_gib(r.get('estimate_bytes'))} | "
          f"{_fmt(floor, '.0f')} | "
          f"{_fmt(floor and r['images_per_s'] / floor, '.0%')} | {ref} | {r['compile_s']:.0f} |")
    elif r['what'] == 'decode':
      rows.append(
          f"| tokenizer decode ({r['tokenizer']}{_px(r)}) | {r['batch']} | {r['dtype']} | - | "
          f"{r['images_per_s']:.1f} | - | {_gib(r['peak_bytes'])} | "
          f"{_gib(r.get('estimate_bytes'))} | - | - | {ref} | {r['compile_s']:.0f} |")
  return '\n'.join(rows)


def floors(variants_: list[str], res: int, batch: int) -> list[dict]:
  """The floors of each variant at `res` (bf16, CFG), on an H100 and an H200, with the memory
  estimate and the reference: what `--floors` prints; no device involved."""
  from alitok_jax.models import build  # noqa: PLC0415
  from alitok_jax.train import memory  # noqa: PLC0415

  out = []
  for v in variants_:
    cfg = ar_config(v, res)
    f = floor_bytes(cfg, batch)
    reference, source = reference_of(v, res)
    out.append({'what': 'floor', 'variant': v, 'res': res, 'codes': cfg.image_seq_len,
                'batch': batch, 'params': build.count_params(cfg), **f,
                'floor_s_h100': f['total_bytes'] / bandwidth_of('H100'),
                'floor_images_per_s_h100': batch * bandwidth_of('H100') / f['total_bytes'],
                'floor_images_per_s_h200': batch * bandwidth_of('H200') / f['total_bytes'],
                'estimate_bytes': memory.sample_bytes(cfg, batch)['total'],
                'reference_images_per_s': reference, 'reference_source': source})
  return out


def _floor_table(rows: list[dict]) -> str:
  out = ['| model | res (codes) | params | weight bytes | KV bytes | floor per batch (H100) | '
         'floor images/s H100 | floor images/s H200 | memory estimate | reference images/s |',
         '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in rows:
    ref = r['reference_images_per_s']
    out.append(
        f"| AR-{r['variant']} | {r['res']} ({r['codes']}) | {r['params'] / 1e6:.1f}M | "
        f"{r['weight_bytes'] / 1e9:.1f} GB | {r['kv_bytes'] / 1e9:.1f} GB | "
        f"{r['floor_s_h100']:.3f} s | {r['floor_images_per_s_h100']:.1f} | "
        f"{r['floor_images_per_s_h200']:.1f} | {r['estimate_bytes'] / 1e9:.2f} GB | "
        + ('-' if ref is None else f"{ref:.2f} ({r['reference_source']})") + ' |')
  return '\n'.join(out)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m alitok_jax.commands.benchmark_sample',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--out', help='write all results as JSON here')
  parser.add_argument('--tiny', action='store_true',
                      help='CPU smoke run: tiny models, small batches, few runs')
  parser.add_argument('--variants', default='B,L,XL')
  parser.add_argument('--batch', default='64', help='comma-separated batch sizes')
  parser.add_argument('--res', type=int, default=256, choices=(256, 512),
                      help='image size: 256 (273 codes) or 512 (1,057 codes); sizes every model')
  parser.add_argument('--floors', action='store_true',
                      help='print the floors (H100, H200) and memory estimates at --res for '
                      '--variants at the first --batch, and exit: no device needed')
  parser.add_argument('--runs', type=int, default=5)
  parser.add_argument('--segments', default='8', help='comma-separated segment counts')
  parser.add_argument('--attention', default='einsum', help="comma-separated: einsum,reduce")
  parser.add_argument('--sweep', action='store_true',
                      help='segments 1,4,8,16 x attention einsum,reduce (tuning)')
  parser.add_argument('--float32', action='store_true',
                      help='also time the first variant in float32')
  parser.add_argument('--no-decode', action='store_true')
  parser.add_argument('--no-accuracy', action='store_true')
  parser.add_argument('--accuracy-variant', default='B')
  parser.add_argument('--accuracy-positions', type=int, default=274)
  parser.add_argument('--fixtures', default='',
                      help='a folder with the tiny AR fixture (ar.pth, ar_io.npz), e.g. '
                      '../shared/fixtures: also measure bf16 greedy agreement on it')
  parser.add_argument('--child', nargs='+', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.child:
    kind, *rest = args.child
    fn = {'sample': measure_sampler, 'decode': measure_decode, 'accuracy': measure_accuracy}[kind]
    types = {'sample': (str, int, str, int, str, int, int), 'decode': (str, int, str, int, int),
             'accuracy': (str, int, str)}[kind]
    print('RESULT ' + json.dumps(fn(*(t(v) for t, v in zip(types, rest)))), flush=True)
    return
  if args.floors:
    rows = floors(args.variants.split(','), args.res, int(args.batch.split(',')[0]))
    print(_floor_table(rows))
    if args.out:
      pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
      pathlib.Path(args.out).write_text(json.dumps(rows, indent=1) + '\n')
    return

  if args.tiny:
    variants_, batches, runs, tokenizer, decode_batch = ['tiny'], [4], 2, 'tiny_stage2', 4
    dtype = 'float32'
  else:
    variants_ = args.variants.split(',')
    batches, runs, tokenizer, decode_batch = [int(b) for b in args.batch.split(',')], args.runs, \
        'stage2', 64
    dtype = 'bfloat16'
  segments = [1, 4, 8, 16] if args.sweep else [int(s) for s in args.segments.split(',')]
  attentions = ['einsum', 'reduce'] if args.sweep else args.attention.split(',')
  res = args.res
  jobs = [('sample', v, b, dtype, s, a, runs, res) for v in variants_ for b in batches
          for s in segments for a in attentions]
  if args.float32:
    jobs.append(('sample', variants_[0], batches[0], 'float32', segments[0], attentions[0], runs,
                 res))
  if not args.no_decode:
    jobs.append(('decode', tokenizer, decode_batch, dtype, runs, res))
  if not args.no_accuracy:
    jobs.append(('accuracy', args.accuracy_variant, args.accuracy_positions, args.fixtures))

  results = []
  for job in jobs:
    r = _child([str(x) for x in job])
    results.append(r)
    if r['what'] == 'error':
      print(f"  failed: {r['error']}", flush=True)
    elif r['what'] == 'accuracy':
      print('  ' + json.dumps({k: v for k, v in r.items() if k != 'what'}), flush=True)
    else:
      print(_table([r]).splitlines()[-1], flush=True)
  print('\n' + _table(results))
  for r in results:
    if r['what'] == 'accuracy':
      print('\nbf16 vs float32: ' + json.dumps({k: v for k, v in r.items() if k != 'what'},
                                               indent=1))
  if args.out:
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {'command': ' '.join(['python -m alitok_jax.commands.benchmark_sample',
                                *(argv or sys.argv[1:])]),
           'time': time.strftime('%Y-%m-%d %H:%M:%S'), 'results': results}
    path.write_text(json.dumps(doc, indent=1) + '\n')
    print(f'\nwrote {path}')
  if any(r['what'] == 'error' for r in results):
    sys.exit(1)


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  main()
