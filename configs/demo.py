"""The whole pipeline on the built-in synthetic set, sized for a laptop CPU (about 15 minutes).

  python -m alitok_jax.main --config=configs/demo.py --workdir=workdirs/demo
  python -m alitok_jax.main --config=configs/demo.py:small --workdir=workdirs/demo_small  # ~4 min

Tokenizer stage 1 -> stage 2 -> pretokenization -> AR training -> sampling -> evaluation, each
stage the project's own mode with a small config; the report lands in W/report/index.html.
Rerunning the command skips (or resumes) whatever is already done.

Config argument res=N: the image size (default 32: 4-pixel patches in an 8 x 8 grid, 9 prefix
tokens + 64 = 73 codes). `configs/demo.py:small,res=64` is the laptop's analogue of the paper's
512 (Table 5): the same 4-pixel patches over a 16 x 16 grid, so 17 prefix tokens (the top-left
patch and the first patch row, where the synthetic class band lies) + 256 = 273 codes.
"""

import ml_collections

from alitok_jax import config_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant, args = config_args.parse(arg, 'configs/demo.py', variants=('default', 'small'),
                                    default='default', res=32)
  small = variant == 'small'
  c = ml_collections.ConfigDict()
  c.mode = 'demo'
  c.seed = 0
  c.num_classes = 10  # synthetic classes (chance = 1 / num_classes)
  c.dataset_size = 20_000  # distinct synthetic training images
  c.tokenizer_stage1 = 'demo_stage1'  # keys of models.variants.TOKENIZER / AR
  c.tokenizer_stage2 = 'demo_stage2'
  c.ar_model = 'demo'
  c.image_size = args.res  # the models' sizes follow: grid image_size / 4, codes 1 + g + g^2
  c.dtype = 'float32'

  c.stage1_steps = 60 if small else 3000
  c.stage2_steps = 20 if small else 1200
  c.tokenizer_batch = 16
  c.tokenizer_lr = 1e-3  # stage 1: 2e-3 learns faster but collapses the codebook in some runs
  c.stage2_lr = 3e-3  # stage 2 trains only the decoder (the codebook is frozen): no such risk
  c.pretokenize_images = 100 if small else 2000
  c.ar_steps = 30 if small else 800
  c.ar_batch = 64
  c.ar_lr = 2e-3
  c.samples_per_class = 2 if small else 8
  c.guidance_scale = 3.0
  c.guidance_pow = 1.0
  c.temperature = 1.0
  c.top_k = 0  # 0 = off
  c.eval_images = 64 if small else 500
  return c
