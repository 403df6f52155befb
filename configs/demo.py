"""The whole pipeline on the built-in synthetic set, sized for a laptop CPU (about 15 minutes).

  python -m alitok_jax.main --config=configs/demo.py --workdir=workdirs/demo
  python -m alitok_jax.main --config=configs/demo.py:small --workdir=workdirs/demo_small  # ~4 min

Tokenizer stage 1 -> stage 2 -> pretokenization -> AR training -> sampling -> evaluation, each
stage the project's own mode with a small config; the report lands in W/report/index.html.
Rerunning the command skips (or resumes) whatever is already done.

Config argument res=N: the image size (default 32: 8-pixel patches in a 4 x 4 grid, 5 prefix
tokens + 16 = 21 codes from 4096). `configs/demo.py:small,res=64` is the laptop's analogue of the
paper's 512 (Table 5): the same patches over a grid twice as wide, 8 x 8, so 9 prefix tokens (the
top-left patch and the first patch row, where the synthetic class band lies) + 64 = 73 codes.

What the settings are for (measured on this 2-core CPU; README, "Quick start"): the models are
narrow (widths 64-128), so they start with 'fan_in' kernels; 8-pixel patches keep a step cheap
(37 encoder tokens), so the tokenizer gets thousands of steps; the prefix loss weight is 0.3
(the reference's 10 x 5 / 16 would weigh the first patch row 3x more than the whole image); the
bidirectional stage 2 decoder then sharpens the causal stage 1's reconstructions.
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

  c.stage1_steps = 60 if small else 6000
  c.stage2_steps = 20 if small else 2000
  c.tokenizer_batch = 16
  c.tokenizer_lr = 1e-3
  c.stage2_lr = 3e-3  # stage 2 trains only the decoder (the codebook is frozen)
  c.prefix_loss_weight = 0.3  # stage 1 (0 = the reference's 10 x prefix / grid tokens)
  c.pretokenize_images = 100 if small else 2000
  c.ar_steps = 30 if small else 3000
  c.ar_batch = 64
  c.ar_lr = 2e-3
  c.samples_per_class = 2 if small else 8
  c.guidance_scale = 3.0
  c.guidance_pow = 1.0
  c.temperature = 1.0
  c.top_k = 0  # 0 = off
  c.eval_images = 64 if small else 500
  return c
