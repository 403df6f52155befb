"""The `demo` mode: the whole AliTok pipeline on the built-in synthetic set, with a report.

    python -m alitok_jax.main --config=configs/demo.py --workdir=workdirs/demo

Stages, each the project's own mode with a small config (so the demo exercises the real code):
1. tokenizer stage 1 (causal decoder + prefix head, clustered codebook)   -> W/stage1/model
2. tokenizer stage 2 (bidirectional decoder, from stage 1, encoder frozen) -> W/stage2/model
3. pretokenization (ten crops per image)                                   -> W/codes
4. AR training on the codes                                                 -> W/ar/model
5. sampling with classifier-free guidance, `samples_per_class` per class
6. evaluation -> W/report/: reconstructions.png, samples.png, metrics.json, index.html
   - recon_psnr: PSNR of stage-2 reconstructions of held-out images (another seed);
   - recon_psnr_baseline: PSNR of the trivial reconstruction (each image's mean colour);
   - class_consistency: the share of samples that the synthetic set's checker (which knows how
     each class is drawn) assigns to the class they were sampled for; chance = 1 / classes.
A rerun skips finished stages and resumes an interrupted one.
"""

from __future__ import annotations

import html
import json
import pathlib
import time

import ml_collections
import numpy as np

from alitok_jax import Generator, Tokenizer, config_files, viz
from alitok_jax.commands import pretokenize, train_ar, train_tokenizer
from alitok_jax.data import synthetic, synthetic_checkers
from alitok_jax.eval import image_metrics
from alitok_jax.models import variants


def _quiet(c: ml_collections.ConfigDict, steps: int) -> None:
  c.log_every = max(steps // 5, 1)
  c.ckpt_every = max(steps // 2, 1)
  c.export_every = 0


def _sizes(config, c: ml_collections.ConfigDict) -> None:
  """The demo models' sizes (`models/variants.sized`): the demo tokenizer's codebook and patch
  size at the demo's image size (config.image_size; absent in old configs: the variant's)."""
  tok = variants.TOKENIZER[config.tokenizer_stage1]
  c.image_size = config.get('image_size') or tok.image_size
  c.codebook_size = tok.codebook_size
  c.patch_size = tok.patch_size  # the AR model's grid is image_size / the tokenizer's patches


def _tokenizer_config(config, stage: int, init_from: str) -> ml_collections.ConfigDict:
  c = config_files.load(f'stage{stage}', 'tiny')
  steps = config.stage1_steps if stage == 1 else config.stage2_steps
  c.model = config.tokenizer_stage1 if stage == 1 else config.tokenizer_stage2
  _sizes(config, c)
  c.init_from = init_from
  c.codebook_init = 'data'  # a random start collapses in a run this short
  c.seed, c.dtype, c.batch_size = config.seed, config.dtype, config.tokenizer_batch
  c.data.kind, c.data.num_classes = 'synthetic', config.num_classes
  c.data.size = config.dataset_size
  lr = config.tokenizer_lr if stage == 1 else config.stage2_lr
  c.optim.lr, c.optim.warmup_steps = lr, max(steps // 20, 1)
  c.phases = (dict(name='reconstruction', steps=steps, lr=lr * 0.2),)
  c.eval_every, c.eval_images, c.preview_images = steps, 16, 8
  _quiet(c, steps)
  return c


def _pretokenize_config(config, tokenizer: str) -> ml_collections.ConfigDict:
  c = config_files.load('pretokenize', 'tiny')
  c.tokenizer, c.random_tokenizer, c.dtype = tokenizer, '', config.dtype
  _sizes(config, c)
  c.data.kind, c.data.num_classes = 'synthetic', config.num_classes
  c.data.size = config.dataset_size
  c.num_images = config.pretokenize_images
  c.images_per_shard, c.batch_size = 250, 16
  return c


def _ar_config(config, codes: str, tokenizer: str) -> ml_collections.ConfigDict:
  c = config_files.load('ar', 'tiny')
  c.model, c.seed, c.dtype = config.ar_model, config.seed, config.dtype
  _sizes(config, c)
  c.batch_size = config.ar_batch
  c.data.kind, c.data.codes_dir = 'codes', codes
  c.optim.lr, c.optim.end_lr = config.ar_lr, config.ar_lr * 0.05
  c.optim.warmup_steps, c.optim.total_steps = max(config.ar_steps // 20, 1), config.ar_steps
  c.tokenizer, c.sample_every = tokenizer, config.ar_steps
  c.sample_classes = tuple(range(config.num_classes))
  c.samples_per_class = 2
  c.sample_guidance, c.sample_guidance_pow = config.guidance_scale, config.guidance_pow
  c.eval_every = 0
  _quiet(c, config.ar_steps)
  return c


def _stage(title: str, timings: dict, fn, *args) -> None:
  print(f'\n=== {title} ===', flush=True)
  start = time.perf_counter()
  fn(*args)
  timings[title] = round(time.perf_counter() - start, 1)
  print(f'=== {title}: {timings[title]:.0f} s ===', flush=True)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  w = pathlib.Path(workdir).expanduser().resolve()
  report = w / 'report'
  report.mkdir(parents=True, exist_ok=True)
  timings: dict[str, float] = {}
  start = time.perf_counter()
  _stage('tokenizer stage 1', timings, train_tokenizer.run,
         _tokenizer_config(config, 1, ''), str(w / 'stage1'))
  _stage('tokenizer stage 2', timings, train_tokenizer.run,
         _tokenizer_config(config, 2, str(w / 'stage1/model')), str(w / 'stage2'))
  tok_dir = str(w / 'stage2/model')
  _stage('pretokenization', timings, pretokenize.run, _pretokenize_config(config, tok_dir),
         str(w / 'codes'))
  _stage('AR training', timings, train_ar.run, _ar_config(config, str(w / 'codes'), tok_dir),
         str(w / 'ar'))

  print('\n=== sampling and evaluation ===', flush=True)
  t = time.perf_counter()
  tok = Tokenizer.load(tok_dir)
  gen = Generator.load(w / 'ar/model')
  n = config.samples_per_class
  labels = np.repeat(np.arange(config.num_classes, dtype=np.int32), n)
  codes = gen.sample(labels, config.guidance_scale, config.guidance_pow,
                     temperature=config.temperature, top_k=config.top_k or None, seed=config.seed)
  samples = viz.to_uint8(np.asarray(tok.decode(codes)))
  predicted = synthetic_checkers.colour_class(samples, config.num_classes)
  consistency = float(np.mean(predicted == labels))

  held_out = synthetic.SyntheticImages(config.num_classes, config.eval_images,
                                       tok.config.image_size, seed=config.seed + 1000)
  originals = np.stack([held_out[i]['image'] for i in range(len(held_out))])
  recon = np.concatenate([np.asarray(tok.reconstruct(originals[i:i + 32]))
                          for i in range(0, len(originals), 32)])
  x = originals.astype(np.float32) / 255.0
  mean_colour = np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
  timings['sampling and evaluation'] = round(time.perf_counter() - t, 1)
  metrics = {
      'recon_psnr': float(image_metrics.psnr(x, viz.to_uint8(recon) / 255.0).mean()),
      'recon_psnr_baseline': float(image_metrics.psnr(x, mean_colour).mean()),
      'class_consistency': consistency,
      'chance': 1.0 / config.num_classes,
      'samples': int(len(labels)),
      'held_out_images': int(len(originals)),
      'per_class_consistency': [float(np.mean(predicted[labels == k] == k))
                                for k in range(config.num_classes)],
      'seconds': {**timings, 'total': round(time.perf_counter() - start, 1)},
  }
  zoom = max(1, 128 // tok.config.image_size)  # small images are shown enlarged, pixel by pixel
  big = lambda a: np.repeat(np.repeat(viz.to_uint8(a), zoom, axis=1), zoom, axis=2)
  viz.save_png(report / 'reconstructions.png',
               viz.grid([big(originals[i:i + 8]) if j == 0 else big(recon[i:i + 8])
                         for i in range(0, min(len(originals), 32), 8) for j in (0, 1)]))
  viz.save_png(report / 'samples.png', viz.grid([big(samples[k * n:(k + 1) * n])
                                                 for k in range(config.num_classes)]))
  (report / 'metrics.json').write_text(json.dumps(metrics, indent=1) + '\n')
  (report / 'index.html').write_text(_html(metrics, config))
  print(f'\nrecon PSNR {metrics["recon_psnr"]:.2f} dB (mean-colour baseline '
        f'{metrics["recon_psnr_baseline"]:.2f} dB); class consistency '
        f'{consistency:.1%} (chance {metrics["chance"]:.1%}); '
        f'{metrics["seconds"]["total"]:.0f} s in all\nreport: {report / "index.html"}', flush=True)
  return metrics


def _html(metrics: dict, config) -> str:
  rows = ''.join(f'<tr><td>{html.escape(k)}</td><td>{v:.0f} s</td></tr>'
                 for k, v in metrics['seconds'].items())
  gain = metrics['recon_psnr'] - metrics['recon_psnr_baseline']
  ratio = metrics['class_consistency'] / metrics['chance']
  return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>alitok_jax demo</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
td{{padding:2px 12px}} img{{image-rendering:pixelated;max-width:100%}}</style></head><body>
<h1>alitok_jax demo: the whole pipeline on synthetic data</h1>
<p>Tokenizer stage 1 &rarr; stage 2 &rarr; pretokenization &rarr; AR training &rarr; sampling
&rarr; evaluation, on {config.num_classes} synthetic classes (shapes and colours, with a class
band along the top row), all on this machine.</p>
<h2>Numbers</h2><table>
<tr><td>reconstruction PSNR (held-out)</td><td>{metrics['recon_psnr']:.2f} dB</td></tr>
<tr><td>mean-colour baseline</td><td>{metrics['recon_psnr_baseline']:.2f} dB
 (gain {gain:+.2f} dB)</td></tr>
<tr><td>class consistency of samples</td><td>{metrics['class_consistency']:.1%}
 ({ratio:.1f} x chance)</td></tr>
<tr><td>chance</td><td>{metrics['chance']:.1%}</td></tr></table>
<h2>Reconstructions</h2><p>Pairs of rows: held-out originals, then the stage-2 tokenizer's
reconstructions.</p><img src="reconstructions.png">
<h2>Samples</h2><p>One row per class, {config.samples_per_class} samples each, guidance
{config.guidance_scale}.</p><img src="samples.png">
<h2>Time</h2><table>{rows}</table>
<p>Training curves: <code>metrics.jsonl</code> and <code>tensorboard/</code> in each stage's
folder.</p></body></html>
"""
