"""AR training: configs/ar.py:B | :L | :XL (the released recipe) or :tiny (CPU).

  python -m alitok_jax.main --config=configs/ar.py:B --workdir=runs/ar_b \
      --config.data.codes_dir=codes/imagenet_train --config.tokenizer=weights/tokenizer
  python -m alitok_jax.main --config=configs/ar.py:L,accum=4 ...   # batch 2048 on fewer chips
  python -m alitok_jax.main --config=configs/ar.py:tiny --workdir=runs/ar_tiny   # ~1 minute on CPU

Config arguments (after the variant, `alitok_jax/config_args.py`): batch=N, the global batch
(default 2048; 16 for tiny); accum=N, micro-batches per step (gradient accumulation: the same
global batch in N passes, for fewer or smaller chips; default 1); res=N, the image size of the
tokenizer's codes (256: 273 codes; 512: 1,057) and codebook=N (4096; 16384, Table 6).

512 x 512 (Table 5: the AR model fine-tuned from its 256 weights; no tensor depends on the code
count, RoPE is computed, so the 256 model directory is the starting point as it is):

  python -m alitok_jax.main --config=configs/ar.py:L,res=512 --workdir=runs/ar_l_512 \
      --config.init_from=weights/ar_l --config.data.codes_dir=codes/imagenet512_train \
      --config.tokenizer=weights/tokenizer512

The paper gives no fine-tuning schedule; ours (a stated choice): global batch 1024 (4x the codes
per sequence of 256), lr 1e-4 after 5k warm-up steps, cosine to 1e-5 over 100k steps, and
remat for L and XL (the activations grow ~4x). codebook=16384 keeps the 256 recipe.

Recipe (ALITOK_REFERENCE.md section 3, configs/alitok_*.yaml): AdamW lr 4e-4, betas (0.9, 0.96),
weight decay 0.03 on matrices only, gradient clipping 1.0, global batch 2048, 62.5k warm-up steps
then cosine to 1e-5; B and L 500k steps (800 epochs of the ten-crop codes), XL 250k; dropouts
0.1 (token embedding, attention, residual) and label dropout 0.1; bf16 compute, float32 params.
Rerunning the same command resumes.
"""

import ml_collections

from alitok_jax import config_args
from alitok_jax.models.variants import RELEASED_GUIDANCE

TINY_GUIDANCE = (2.0, 1.0)  # the tiny variant's sample grids (not a released model)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant, args = config_args.parse(arg, 'configs/ar.py', variants=('B', 'L', 'XL', 'tiny'),
                                    default='B', batch=int, accum=int,
                                    **config_args.SIZE_SETTINGS)
  tiny = variant == 'tiny'
  c = ml_collections.ConfigDict()
  c.mode = 'train_ar'
  c.model = variant  # a key of variants.AR
  config_args.set_sizes(c, args, 'configs/ar.py')  # c.image_size, c.codebook_size
  c.init_from = ''  # an AR model directory to fine-tune from (fresh optimizer), e.g. at 512
  c.seed = 0
  c.dtype = 'bfloat16'
  c.batch_size = 2048  # global
  c.accum_steps = 1  # gradient accumulation: micro-batches per step
  c.remat = variant == 'XL'  # recompute block activations in the backward pass (saves memory)
  # Dropouts (None keeps the variant's 0.1).
  c.dropout = ml_collections.FieldReference(None, field_type=float)
  c.attn_dropout = ml_collections.FieldReference(None, field_type=float)
  c.token_dropout = ml_collections.FieldReference(None, field_type=float)
  c.class_dropout = ml_collections.FieldReference(None, field_type=float)

  c.data = ml_collections.ConfigDict()
  c.data.kind = 'codes'  # codes | images (encoded on the fly by config.tokenizer) | synthetic_codes
  c.data.codes_dir = ''  # shards written by configs/pretokenize.py
  c.data.image_kind = 'folder'  # images: synthetic | folder | tfds (as the tokenizer trainer's data)
  c.data.root = ''
  c.data.split = 'train'
  c.data.data_dir = ''
  c.data.num_classes = 10
  c.data.size = 100_000
  c.data.worker_count = 0
  c.eval_codes_dir = ''  # held-out code shards ('' = none, or synthetic with another seed)
  c.eval_codes = 1024  # how many held-out sequences to evaluate

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 4e-4
  c.optim.end_lr = 1e-5
  c.optim.warmup_steps = 62_500  # lr * n / warmup_steps at step n (the first 0), as the reference
  c.optim.total_steps = 250_000 if variant == 'XL' else 500_000
  c.optim.b1 = 0.9
  c.optim.b2 = 0.96
  c.optim.weight_decay = 0.03
  c.optim.grad_clip = 1.0

  c.tokenizer = ''  # a tokenizer model directory: sample grids (and on-the-fly encoding)
  c.sample_every = 10_000
  c.sample_classes = (207, 360, 387, 974, 88, 979, 417, 279)  # the reference's demo classes
  c.samples_per_class = 4
  c.sample_guidance, c.sample_guidance_pow = RELEASED_GUIDANCE.get(variant, TINY_GUIDANCE)

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=8 if variant == 'XL' else 1,
                                          fsdp_min_size=2**18))
  c.log_every = 100
  c.eval_every = 5000
  c.ckpt_every = 2000
  c.keep_checkpoints = 2
  # Steps with a NaN / inf loss or gradients are skipped (no update); this many in a row stop
  # the run with exit code 3 (0: never stop).
  c.nonfinite_patience = 10
  c.steps_per_run = 0  # > 0: checkpoint and stop after this many steps (jobs with time limits)
  c.export_every = 50_000

  if tiny:
    c.dtype = 'float32'
    c.batch_size = 16
    c.data.kind = 'synthetic_codes'
    c.data.num_classes = 10
    c.data.size = 4096
    c.eval_codes = 64
    c.optim.lr = 3e-3
    c.optim.end_lr = 3e-4
    c.optim.warmup_steps = 10
    c.optim.total_steps = 60
    c.sample_classes = (0, 1, 2, 3)
    c.samples_per_class = 2
    c.log_every = 10
    c.eval_every = 30
    c.ckpt_every = 30
    c.export_every = 0
  if c.image_size != 256 and not tiny:  # a fine-tune from the 256 weights (see above)
    c.batch_size = 1024
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 5000
    c.optim.total_steps = 100_000
    c.remat = variant in ('L', 'XL')
  if args.batch is not None:
    c.batch_size = args.batch
  if args.accum is not None:
    c.accum_steps = args.accum
  return c
