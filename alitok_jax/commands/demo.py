"""The `demo` mode: the whole AliTok pipeline on the built-in synthetic set, with a report.

    python -m alitok_jax.main --config=configs/demo.py --workdir=workdirs/demo

Stages, each the project's own mode with a small config (so the demo exercises the real code):
1. tokenizer stage 1 (causal decoder + prefix head, clustered codebook)   -> W/stage1/model
2. tokenizer stage 2 (bidirectional decoder, from stage 1, encoder frozen) -> W/stage2/model
3. pretokenization (ten crops per image)                                   -> W/codes
4. AR training on the codes                                                 -> W/ar/model
5. sampling with classifier-free guidance, `samples_per_class` per class
6. evaluation (eval/synthetic_scores.py) -> W/report/ (commands/demo_report.py), each figure
   next to its chance or trivial baseline:
   - recon_shape_accuracy: the share of stage-2 reconstructions of held-out images (another
     seed) whose shape the colour-blind checker (data/synthetic_checkers.shape_class) names as
     the original's; recon_psnr, recon_ssim;
   - sample_shape_consistency: the share of samples that show their class's shape;
     sample_colour_consistency: the share the colour checker names as their class (a blob in
     the class colour passes it); sample_near_copies: the share within 30 dB of a training image.
A rerun skips finished stages and resumes an interrupted one.
"""

from __future__ import annotations

import pathlib
import time

import ml_collections
import numpy as np

from alitok_jax import Generator, Tokenizer, config_files, viz
from alitok_jax.commands import demo_report, pretokenize, train_ar, train_tokenizer
from alitok_jax.data import synthetic
from alitok_jax.eval import synthetic_scores
from alitok_jax.models import variants


def _quiet(c: ml_collections.ConfigDict, steps: int) -> None:
  c.log_every = max(steps // 20, 1)  # points of the training curves
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
  c.prefix_loss_weight = config.prefix_loss_weight
  c.eval_every, c.eval_images, c.preview_images = max(steps // 5, 1), 32, 8  # the PSNR curve
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
  results = evaluate(config, tok_dir, str(w / 'ar/model'))
  timings['sampling and evaluation'] = round(time.perf_counter() - t, 1)
  metrics = {**results.pop('metrics'), 'seconds': {**timings,
                                                   'total': round(time.perf_counter() - start, 1)}}
  demo_report.write(report, w, metrics=metrics, num_classes=config.num_classes,
                    settings=_settings(config), **results)
  print(_summary(metrics) + f'\nreport: {report / "index.html"}', flush=True)
  return metrics


def _settings(config) -> dict:
  keys = ('image_size', 'tokenizer_stage1', 'tokenizer_stage2', 'ar_model', 'stage1_steps',
          'stage2_steps', 'tokenizer_batch', 'tokenizer_lr', 'stage2_lr', 'pretokenize_images',
          'ar_steps', 'ar_batch', 'ar_lr', 'guidance_scale', 'guidance_pow', 'temperature',
          'top_k', 'seed')
  return {k: config.get(k) for k in keys}


def evaluate(config, tok_dir: str, ar_dir: str) -> dict:
  """Samples `samples_per_class` per class, reconstructs `eval_images` held-out images, scores
  both against their trivial answers (eval/synthetic_scores.py). Returns the report's inputs:
  metrics and the arrays."""
  tok, gen = Tokenizer.load(tok_dir), Generator.load(ar_dir)
  k, size = config.num_classes, tok.config.image_size
  labels = np.repeat(np.arange(k, dtype=np.int32), config.samples_per_class)
  codes = gen.sample(labels, config.guidance_scale, config.guidance_pow,
                     temperature=config.temperature, top_k=config.top_k or None, seed=config.seed)
  samples = viz.to_uint8(np.asarray(tok.decode(codes)))
  # Trivial answers for the samples: decoded uniformly random codes, and a copy of the training
  # images the AR model learned from (same labels).
  rng = np.random.default_rng(config.seed)
  random_codes = rng.integers(0, tok.config.codebook_size, np.asarray(codes).shape)
  random_images = viz.to_uint8(np.asarray(tok.decode(random_codes)))
  training = synthetic.SyntheticImages(k, config.dataset_size, size, seed=config.seed)
  seen = min(config.pretokenize_images, len(training))  # the images behind the AR's codes
  train_images = np.stack([training[i]['image'] for i in range(seen)])
  train_labels = np.array([training.label(i) for i in range(seen)], np.int32)
  baselines = {'random_codes': random_images}
  if set(labels.tolist()) <= set(train_labels.tolist()):  # every class among the seen images
    baselines['copy_of_training_images'] = np.stack(
        [train_images[_nth_of_class(train_labels, c, j)] for j, c in enumerate(labels)])
  sample_scores = synthetic_scores.sample_scores(
      samples, labels, k, training_images=train_images, training_labels=train_labels,
      baselines=baselines)

  held_out = synthetic.SyntheticImages(k, config.eval_images, size, seed=config.seed + 1000)
  originals = np.stack([held_out[i]['image'] for i in range(len(held_out))])
  held_labels = np.array([held_out.label(i) for i in range(len(held_out))], np.int32)
  recon = np.concatenate([np.asarray(tok.reconstruct(originals[i:i + 32]))
                          for i in range(0, len(originals), 32)])
  recon_scores = synthetic_scores.reconstruction_scores(originals, held_labels, recon)

  rows = synthetic_scores.per_class(held_labels, k,
                                    recon_shape_accuracy=recon_scores['per_image']['shape_hit'],
                                    recon_psnr=recon_scores['per_image']['psnr'])
  sample_rows = synthetic_scores.per_class(
      labels, k, sample_shape_consistency=sample_scores['per_image']['shape_hit'],
      sample_colour_consistency=sample_scores['per_image']['colour_hit'])
  for row, extra in zip(rows, sample_rows):
    row.update({c: v for c, v in extra.items() if c.startswith('sample_')})
  strip = lambda d: {key: v for key, v in d.items() if key != 'per_image'}
  metrics = {
      'recon_shape_accuracy': recon_scores['shape_accuracy'],
      'recon_psnr': recon_scores['psnr'],
      'recon_ssim': recon_scores['ssim'],
      'sample_shape_consistency': sample_scores['shape_consistency'],
      'sample_colour_consistency': sample_scores['colour_consistency'],
      'sample_near_copies': sample_scores['near_copies'],
      'chance_shape': 1.0 / len(synthetic.SHAPES),
      'chance_class': 1.0 / k,
      'num_classes': k,
      'num_samples': int(len(labels)),
      'num_held_out': int(len(originals)),
      'reconstruction': strip(recon_scores),
      'samples': strip(sample_scores),
      'per_class': rows,
  }
  return {'metrics': metrics, 'originals': originals, 'originals_labels': held_labels,
          'reconstructions': recon, 'samples': samples, 'sample_labels': labels}


def _nth_of_class(labels: np.ndarray, c: int, n: int) -> int:
  """Index of the n-th image of class c in `labels` (cycling when the class has fewer)."""
  of_class = np.nonzero(labels == c)[0]
  return int(of_class[n % len(of_class)])


def _summary(m: dict) -> str:
  rec, smp = m['reconstruction']['baselines'], m['samples']['baselines']
  return '\n'.join([
      f'reconstructions ({m["num_held_out"]} held-out images): shape accuracy '
      f'{m["recon_shape_accuracy"]:.1%} (4x-blurred originals '
      f'{rec["shape_accuracy"]["blurred_x4"]:.1%}, chance {m["chance_shape"]:.0%}), PSNR '
      f'{m["recon_psnr"]:.2f} dB (mean colour {rec["psnr"]["mean_colour"]:.2f} dB), SSIM '
      f'{m["recon_ssim"]:.3f}',
      f'samples ({m["num_samples"]}): shape consistency {m["sample_shape_consistency"]:.1%} '
      f'(random codes {smp["random_codes"]["shape_consistency"]:.1%}, chance '
      f'{m["chance_shape"]:.0%}), colour consistency {m["sample_colour_consistency"]:.1%} '
      f'(chance {m["chance_class"]:.0%}), near-copies of training images '
      f'{m["sample_near_copies"]:.1%}',
      f'{m["seconds"]["total"]:.0f} s in all'])
