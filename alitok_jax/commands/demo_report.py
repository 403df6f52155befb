"""The demo's report: W/report/index.html, metrics.json, pictures, curves and the arrays behind them.

Written by the `demo` mode (commands/demo.py) from the scores of `eval/synthetic_scores.py`:
- index.html: the shape figures first, each next to its chance or trivial baseline, then colour,
  PSNR and SSIM; a per-class table; the pictures; the stages' times;
- metrics.json: the same figures (headline keys at the top, details under `reconstruction`,
  `samples` and `per_class`);
- overview.png (per class: held-out originals, their reconstructions, samples), reconstructions
  .png, samples.png, training_curves.png (every stage's metrics.jsonl);
- reconstructions.npz (originals, labels, reconstructions) and samples.npz (samples, labels),
  uint8, so that anyone can judge the pictures with their own tools.
"""

from __future__ import annotations

import html
import json
import pathlib

import numpy as np

from alitok_jax import viz

# What the curves show, per stage: (title, folder under the workdir, keys of its metrics.jsonl).
CURVES = (
    ('tokenizer stage 1: training losses', 'stage1', ['loss/mse', 'loss/prefix', 'loss/quantizer']),
    ('tokenizer stage 1: held-out PSNR (dB)', 'stage1', ['eval/psnr']),
    ('tokenizer stage 2: training loss', 'stage2', ['loss/mse']),
    ('tokenizer stage 2: held-out PSNR (dB)', 'stage2', ['eval/psnr']),
    ('AR model: training loss (nats per code)', 'ar', ['train/loss']),
    ('AR model: next-code accuracy (training batches)', 'ar', ['train/accuracy']),
)


def _zoom(images: np.ndarray, image_size: int) -> np.ndarray:
  """Small images enlarged pixel by pixel to about 128 pixels, so a browser shows them sharp."""
  zoom = max(1, 128 // image_size)
  return np.repeat(np.repeat(viz.to_uint8(images), zoom, axis=1), zoom, axis=2)


def _overview(originals, originals_labels, recon, samples, sample_labels, num_classes,
              per_row: int) -> np.ndarray:
  """Per class a row: `per_row` held-out originals, their reconstructions, then as many
  samples, with a blank tile between the groups."""
  size = originals.shape[1]
  blank = np.full((1, size, size, 3), 255, np.uint8)
  rows = []
  for k in range(num_classes):
    o = np.nonzero(originals_labels == k)[0][:per_row]
    s = np.nonzero(sample_labels == k)[0][:per_row]
    rows.append(np.concatenate([originals[o], blank, viz.to_uint8(recon[o]), blank,
                                samples[s]]))
  return viz.grid([_zoom(r, size) for r in rows])


def write(report: pathlib.Path, workdir: pathlib.Path, *, metrics: dict, originals: np.ndarray,
          originals_labels: np.ndarray, reconstructions: np.ndarray, samples: np.ndarray,
          sample_labels: np.ndarray, num_classes: int, settings: dict) -> None:
  """Writes every file of the report (see the module docstring)."""
  report.mkdir(parents=True, exist_ok=True)
  size = originals.shape[1]
  recon = viz.to_uint8(reconstructions)
  np.savez_compressed(report / 'reconstructions.npz', originals=originals,
                      labels=originals_labels.astype(np.int32), reconstructions=recon)
  np.savez_compressed(report / 'samples.npz', samples=samples,
                      labels=sample_labels.astype(np.int32))
  per_row = max(1, min(4, int(np.bincount(sample_labels, minlength=num_classes).min())))
  viz.save_png(report / 'overview.png', _overview(originals, originals_labels, recon, samples,
                                                  sample_labels, num_classes, per_row))
  pairs = min(len(originals), 32)
  viz.save_png(report / 'reconstructions.png',
               viz.grid([_zoom(originals[i:i + 8] if j == 0 else recon[i:i + 8], size)
                         for i in range(0, pairs, 8) for j in (0, 1)]))
  viz.save_png(report / 'samples.png',
               viz.grid([_zoom(samples[sample_labels == k], size) for k in range(num_classes)]))
  viz.training_curves(report / 'training_curves.png',
                      [(title, workdir / stage / 'metrics.jsonl', keys)
                       for title, stage, keys in CURVES])
  (report / 'metrics.json').write_text(json.dumps(metrics, indent=1) + '\n')
  (report / 'index.html').write_text(_html(metrics, settings))


def _pct(x: float) -> str:
  return f'{100 * x:.1f}%'


def _row(name: str, value: str, baselines: str, note: str = '') -> str:
  return (f'<tr><td>{html.escape(name)}</td><td><b>{value}</b></td><td>{baselines}</td>'
          f'<td>{html.escape(note)}</td></tr>')


def _baselines(d: dict, fmt) -> str:
  return ', '.join(f'{html.escape(k.replace("_", " "))} {fmt(v)}' for k, v in d.items())


def _html(m: dict, settings: dict) -> str:
  rec, smp = m['reconstruction'], m['samples']
  rb, sb = rec['baselines'], smp['baselines']
  db = lambda v: f'{v:.2f} dB'
  rows = [
      _row('shape accuracy of held-out reconstructions', _pct(rec['shape_accuracy']),
           _baselines(rb['shape_accuracy'], _pct),
           'the colour-blind checker names the original\'s shape'),
      _row('shape consistency of samples', _pct(smp['shape_consistency']),
           _baselines({k: v['shape_consistency'] for k, v in sb.items()}, _pct),
           'each sample shows its class\'s shape'),
      _row('colour consistency of samples', _pct(smp['colour_consistency']),
           _baselines({k: v['colour_consistency'] for k, v in sb.items()}, _pct),
           'the colour checker names the class (blobs pass it)'),
      _row('near-copies of training images among the samples', _pct(smp['near_copies']),
           _baselines({k: v['near_copies'] for k, v in sb.items() if 'near_copies' in v}, _pct),
           f'within {smp["near_copy_db"]:.0f} dB PSNR of a training image: consistency '
           'without copying'),
      _row('reconstruction PSNR', db(rec['psnr']), _baselines(rb['psnr'], db)),
      _row('reconstruction SSIM', f'{rec["ssim"]:.3f}',
           _baselines(rb['ssim'], lambda v: f'{v:.3f}')),
  ]
  cols = [k for k in m['per_class'][0] if k not in ('class', 'shape', 'colours')]
  per_class = ''.join(
      f'<tr><td>{r["class"]}</td><td>{html.escape(r["shape"])}</td>'
      f'<td>{html.escape(r["colours"])}</td>'
      + ''.join(f'<td>{r[c]:.2f}</td>' if 'psnr' in c else f'<td>{_pct(r[c])}</td>' for c in cols)
      + '</tr>' for r in m['per_class'])
  times = ''.join(f'<tr><td>{html.escape(k)}</td><td>{v:.0f} s</td></tr>'
                  for k, v in m['seconds'].items())
  setting_rows = ''.join(f'<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>'
                         for k, v in settings.items())
  return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>alitok_jax demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
td,th{{padding:2px 10px;text-align:left}} img{{image-rendering:pixelated;max-width:100%}}
table{{border-collapse:collapse}} tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>alitok_jax demo: the whole AliTok pipeline on synthetic shapes</h1>
<p>Tokenizer stage 1 &rarr; stage 2 &rarr; pretokenization &rarr; AR training &rarr; sampling
&rarr; evaluation, on {m['num_classes']} synthetic classes, each a shape in its colours over
stripes, with a class band along the top. The shape figures come from a colour-blind checker
(<code>data/synthetic_checkers.shape_class</code>): it fits the ten shapes to the image and
answers "no shape" where the edges are off by more than half a pixel, so a blob in the right
colour and place scores nothing (see the blurred baseline). The colour figure comes from the
colour checker, which a blob passes.</p>
<h2>Figures</h2>
<table><tr><th>figure</th><th>this run</th><th>trivial answers</th><th></th></tr>
{''.join(rows)}</table>
<h2>Originals, reconstructions, samples</h2>
<p>One row per class: held-out originals, their stage-2 reconstructions, then samples drawn
for the class (guidance {settings.get('guidance_scale')}).</p>
<img src="overview.png">
<h2>Per class</h2>
<table><tr><th>class</th><th>shape</th><th>colours</th>{''.join(f'<th>{html.escape(c)}</th>' for c in cols)}</tr>
{per_class}</table>
<h2>Training curves</h2><img src="training_curves.png">
<h2>More pictures</h2>
<p>Pairs of rows: held-out originals, then their reconstructions.</p>
<img src="reconstructions.png">
<p>Samples, one row per class.</p><img src="samples.png">
<p>The arrays behind the pictures: <code>reconstructions.npz</code> (originals, labels,
reconstructions) and <code>samples.npz</code> (samples, labels), uint8.</p>
<h2>Time</h2><table>{times}</table>
<h2>Settings</h2><table>{setting_rows}</table>
</body></html>
"""
