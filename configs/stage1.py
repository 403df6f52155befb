"""Tokenizer training, stage 1: bidirectional encoder + causal decoder with the prefix head.

  python -m alitok_jax.main --config=configs/stage1.py --workdir=runs/stage1 \
      --config.data.kind=folder --config.data.root=/data/imagenet/train \
      --config.perceptual.model_dir=weights/convnext_small --config.lpips.model_dir=weights/lpips
  python -m alitok_jax.main --config=configs/stage1.py:tiny --workdir=runs/tiny1   # CPU, ~1 minute

The released recipe (ALITOK_REFERENCE.md section 2, train_tokenizer/README): AdamW 1e-4 with a
10k-step warm-up; (1) ~50k steps perceptual 0.1 + LPIPS 1.0; (2) ~200k steps perceptual only, lr
1e-4 -> 2e-5; (3) ~100k steps with the GAN, lr 2e-5 -> 2e-6. The reference changed these by hand
between restarts; here they are `phases`, and a run passes through all of them by itself.
Rerunning the same command resumes from the newest checkpoint in the workdir. Config
arguments: the variant (default or tiny), then batch=N for the global batch (default 256),
res=N for the image size and codebook=N for the codebook size (issue 16).

512 x 512 (the paper's Table 5: "fine-tuned from pre-trained weights at 256 resolution, where
the embedding of tokenizer is linearly interpolated"): convert a 256 tokenizer first, then start
from it (the released AliTok.pth is stage 2; a stage-1 run starts from it by the matching rule):

  python -m alitok_jax.convert AliTok.pth weights/tokenizer512 --image-size=512
  python -m alitok_jax.main --config=configs/stage1.py:res=512 --workdir=runs/stage1_512 \
      --config.init_from=weights/tokenizer512 --config.data.kind=folder --config.data.root=...

The paper gives no fine-tuning schedule; ours (a stated choice): global batch 64 (a 512 image
holds 4x the tokens of a 256 one), 1k warm-up steps, 50k perceptual steps at 2e-5 then 20k GAN
steps at 2e-6 (the 256 recipe's last two phases, shortened). codebook=16384 (Table 6) keeps the
256 recipe.
"""

import ml_collections

from alitok_jax import config_args


def tokenizer_config(stage: int, arg: str | None) -> ml_collections.ConfigDict:
  """What stage1.py and stage2.py share: `arg` is the config argument ('tiny', 'batch=64', ...)."""
  where = f'configs/stage{stage}.py'
  variant, args = config_args.parse(arg, where, variants=('default', 'tiny'),
                                    default='default', batch=int, **config_args.SIZE_SETTINGS)
  tiny = variant == 'tiny'
  c = ml_collections.ConfigDict()
  c.mode = 'train_tokenizer'
  c.stage = stage
  c.model = f'tiny_stage{stage}' if tiny else f'stage{stage}'  # a key of variants.TOKENIZER
  config_args.set_sizes(c, args, where)  # c.image_size, c.codebook_size: the model's sizes
  # A tokenizer model directory to start from: stage 2, the stage-1 run's W/model; a 512 run,
  # a 256 tokenizer converted with --image-size=512.
  c.init_from = ''
  c.seed = 0
  c.dtype = 'bfloat16'  # compute dtype; params and optimizer states stay float32
  c.batch_size = 256  # global, over all devices and processes (paper: 256 on 32 GPUs)

  c.data = ml_collections.ConfigDict()
  c.data.kind = 'synthetic'  # synthetic | folder | tfds
  c.data.root = ''  # folder: one subfolder per class
  c.data.split = 'train'  # tfds split
  c.data.data_dir = ''  # tfds data_dir ('' = TFDS default)
  c.data.num_classes = 10  # synthetic
  c.data.size = 100_000  # synthetic: number of distinct images
  c.data.worker_count = 0  # grain worker processes (0 = in the main process)
  c.eval_data = ml_collections.ConfigDict()
  c.eval_data.kind = ''  # '' = held-out images of the same kind (synthetic: another seed)
  c.eval_data.root = ''
  c.eval_data.split = 'validation'

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-4
  # The generator's rate is lr * n / warmup_steps at iteration n (the first is 0), as the
  # reference's LambdaLR; the discriminator's is the phase rate without warm-up (the reference's
  # `optimizer_d` has no scheduler). docs/TRAINING_REFERENCE.md compares phases and restarts.
  c.optim.warmup_steps = 10_000
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999  # torch.optim.AdamW defaults, as the reference
  c.optim.weight_decay = 0.01
  c.optim.grad_clip = 0.0  # the reference does not clip

  # A tuple, so it can be replaced from the command line:
  #   --config.phases="({'name': 'all', 'steps': 1000, 'lr': 1e-4},)"
  c.phases = (
      dict(name='lpips_warmup', steps=50_000, lr=1e-4, perceptual_weight=0.1, lpips_weight=1.0),
      dict(name='perceptual', steps=200_000 if stage == 1 else 150_000, lr=2e-5,
           perceptual_weight=1.0),
      dict(name='gan', steps=100_000, lr=2e-6, perceptual_weight=1.0, gan=True),
  )
  c.clustering_vq = stage == 1  # online clustered codebook (stage 1 only)
  c.quantizer_weight = 1.0  # the reference's quantizer_weight (stage 1)
  # Weight of stage 1's prefix loss; 0: the reference's, 10 x prefix tokens / grid tokens (10 x
  # 17 / 256 = 0.66). Small grids make that large (3.1 on a 4 x 4 grid), more than the image's
  # own loss: the CPU demo sets its own.
  c.prefix_loss_weight = 0.0
  # random: N(0, 0.02) as the reference; data: entries start as encoder outputs of the first
  # batch (for short runs, where a random start collapses before the clustering spreads it).
  c.codebook_init = 'random'
  c.perceptual = ml_collections.ConfigDict()
  c.perceptual.enabled = True
  c.perceptual.model_dir = 'weights/convnext_small'  # from torchvision's convnext_small-0c510722.pth
  c.lpips = ml_collections.ConfigDict()
  c.lpips.model_dir = 'weights/lpips'  # from vgg16-397923af.pth + lpips' v0.1/vgg.pth
  c.gan = ml_collections.ConfigDict()
  c.gan.discriminator = 'reference'  # a key of models.discriminator.DISCRIMINATOR
  c.gan.disc_factor = 0.1
  c.gan.disc_weight = 0.05

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, fsdp_min_size=2**18))
  c.log_every = 100
  c.eval_every = 5000
  c.eval_images = 500
  c.preview_images = 8
  c.ckpt_every = 1000
  c.keep_checkpoints = 2
  # Steps with a NaN / inf loss or gradients are skipped (no update); this many in a row stop
  # the run with exit code 3 (0: never stop).
  c.nonfinite_patience = 10
  c.steps_per_run = 0  # > 0: checkpoint and stop after this many steps (jobs with time limits)
  c.export_every = 10_000  # params-only model directory W/model (what stage 2 / pretokenize read)

  if tiny:
    c.batch_size = 8
    c.data.num_classes = 4
    c.data.size = 512
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 5
    c.phases = (
        dict(name='reconstruction', steps=12, lr=1e-3),
        dict(name='gan', steps=8, lr=3e-4, gan=True),
    )
    c.perceptual.enabled = False  # no pretrained ConvNeXt needed on a laptop
    c.gan.discriminator = 'tiny'
    c.log_every = 5
    c.eval_every = 10
    c.eval_images = 8
    c.preview_images = 4
    c.ckpt_every = 10
    c.export_every = 0
    c.dtype = 'float32'
  if c.image_size != 256 and not tiny:  # a fine-tune from converted 256 weights (see above)
    c.batch_size = 64
    c.optim.warmup_steps = 1000
    c.phases = (
        dict(name='perceptual', steps=50_000, lr=2e-5, perceptual_weight=1.0),
        dict(name='gan', steps=20_000, lr=2e-6, perceptual_weight=1.0, gan=True),
    )
  if args.batch is not None:
    c.batch_size = args.batch
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return tokenizer_config(1, arg)
