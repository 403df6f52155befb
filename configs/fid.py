"""gFID / sFID / IS / precision / recall of a sample batch against an ADM reference batch.

  python -m alitok_jax.main --config=configs/fid.py --workdir=out/fid \
      --config.samples=samples.npz --config.reference=VIRTUAL_imagenet256_labeled.npz \
      --config.inception=weights/inception
  python -m alitok_jax.main --config=configs/fid.py:tiny --workdir=out/fid_tiny   # CPU smoke run

docs/EVALUATION.md: which reference, how many samples, which sampling settings.
"""

import ml_collections

from alitok_jax import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant, _ = config_args.parse(arg, 'configs/fid.py', variants=('default', 'tiny'),
                                 default='default')
  c = ml_collections.ConfigDict()
  c.mode = 'fid'
  c.samples = ''  # npz whose arr_0 holds uint8 [N, 256, 256, 3] samples (50,000 for ImageNet)
  c.reference = ''  # ADM reference batch, e.g. VIRTUAL_imagenet256_labeled.npz
  c.inception = ''  # from `python -m alitok_jax.convert pt_inception-2015-12-05-6726825d.pth DIR`
  c.random_inception = False  # smoke tests only: random weights, meaningless numbers
  c.batch_size = 200  # images per global batch (rounded up to a multiple of the device count)
  c.num_samples = 0  # 0: every image of the samples file
  c.precision_recall = True
  c.pr_precision = 'float16'  # ADM's distances; 'float32' gives slightly lower P/R
  c.is_split_size = 5000  # ADM: consecutive splits of 5000 (10 splits of 50,000)
  c.preprocess = 'adm'  # Inception input: 'adm' (ADM's TF1 resize, (x - 128) / 128), 'pytorch_fid'
  c.fid_method = 'eigh'  # or 'sqrtm' (scipy, the ADM evaluator's route; slower)
  c.write_stats = ''  # also save the samples' statistics as an ADM-format npz here
  c.tiny_images = 0  # > 0: generate that many test-pattern images as samples and reference
  c.seed = 0
  if variant == 'tiny':
    c.tiny_images = 16
    c.random_inception = True
    c.batch_size = 8
  return c
