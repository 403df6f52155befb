"""Makes training-step fixtures by running the reference's own training code (tiny models, CPU).

Usage (torch, torchvision, einops, omegaconf, requests, tqdm and numpy in a separate venv):

  mkdir -p /tmp/alitok_ref && git --git-dir=ALITOK_GIT_DIR archive HEAD | tar -x -C /tmp/alitok_ref
  /tmp/vt/bin/python tools/make_train_fixtures.py /tmp/alitok_ref tests/fixtures [--only ...]

REF_DIR is a checkout of the reference (github ali-vilab/alitok). Writes into OUT_DIR
(tests/fixtures/ here; tests/fixtures/README_train.md says what each array is):

  train_stage1.npz     one generator and one discriminator iteration of tokenizer stage 1
  train_stage2.npz     the same for stage 2 (encoder, codebook and latent tokens frozen)
  train_ar.npz         two iterations of AR training through `train_one_epoch_generator`
  train_schedules.json learning rates of the reference's schedulers at their boundaries

What runs is the reference's code: the stage-1 / stage-2 models of `train_tokenizer/model`
(widths patched small, as tools/make_fixtures_512.py does), the criterion `MSE_LPIPS_GAN` with
its LPIPS, perceptual loss and discriminator, `torch.optim.AdamW` and the `LambdaLR` +
`LambdaLinearScheduler` that `train_tokenizer.py` builds (the tokenizer iteration is the worker
loop's body, written out here because the loop needs CUDA and DDP); for the AR model
`utils/train_utils.py`'s `create_optimizer`, `create_lr_scheduler` and the training loop
`train_one_epoch_generator` itself, with a one-process stand-in for `accelerate.Accelerator`.
Stand-ins for what a CPU without network cannot load: the ConvNeXt-S and VGG16 that the
criterion asks torchvision for are a tiny ConvNeXt and an untrained VGG16, and LPIPS' download
of its linear layers is skipped; all weights are then overwritten (below).

Every weight, the images, the codebook usage and the AR batches are drawn with numpy from
seeds, and large arrays are stored as summaries: tools/train_fixture_data.py (numpy only: the
tests regenerate the same data from it without torch).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import sys
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_fixture_data import (  # noqa: E402  (this folder is not a package)
    ALL_TERMS, AR, BATCH, CODEBOOK, CONVNEXT_STAGES, DEC, DISC_HIDDEN, ENC, IMAGE_SIZE, PATCH,
    PHASES, RESTART_STEP, STAGE_TERMS, TOKEN_SIZE, TOKENIZER_LR, WARMUP, ar_batches,
    fixture_images, init_value, initial_usage, state_dict, summarize, weights_sha1)


def _store(out: dict, prefix: str, arrays: dict) -> None:
  for k, v in summarize(arrays).items():
    out[f'{prefix}/{k}'] = v


def _load_weights(torch, module, kind: str, rename=lambda n: n) -> list:
  """Overwrites every parameter of `module` with `init_value`; returns the (name, shape) list
  under the names `rename` gives (the torch names the project's converter reads)."""
  shapes = []
  with torch.no_grad():
    for name, p in module.named_parameters():
      shapes.append((rename(name), list(p.shape)))
      p.copy_(torch.from_numpy(init_value(kind, rename(name), p.shape)))
  return shapes


def _margins(a: np.ndarray, b: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
  """(argmin, gap to the runner-up) of the squared distances between rows of a and b, float64,
  along `axis` (1: the nearest row of b for each row of a; 0: the nearest row of a for each b)."""
  d = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
  order = np.sort(d, axis=axis)
  gap = np.take(order, 1, axis=axis) - np.take(order, 0, axis=axis)
  return np.argmin(d, axis=axis), gap


class _Env:
  """The reference's modules, imported once with the stand-ins described above."""

  def __init__(self, ref: str):
    import torch  # noqa: PLC0415
    import torchvision  # noqa: PLC0415
    from torchvision.models import convnext as tv_convnext  # noqa: PLC0415

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    self.torch = torch
    sys.path[:0] = [ref, os.path.join(ref, 'train_tokenizer')]
    real_vgg16 = torchvision.models.vgg16

    def tiny_convnext(weights=None, **kwargs):
      del weights, kwargs
      setting = [tv_convnext.CNBlockConfig(c, nxt[0] if nxt else None, n) for (c, n), nxt in
                 zip(CONVNEXT_STAGES, list(CONVNEXT_STAGES[1:]) + [None])]
      return tv_convnext.ConvNeXt(setting, stochastic_depth_prob=0.0)

    torchvision.models.convnext_small = tiny_convnext
    torchvision.models.vgg16 = lambda weights=None, **kwargs: real_vgg16(weights=None)
    from loss import lpips as lpips_mod  # noqa: PLC0415
    lpips_mod.LPIPS.load_pretrained = lambda self: None  # its linear layers come from numpy
    from loss import discriminator, mse_lpips_gan  # noqa: PLC0415
    import tok_utils  # noqa: PLC0415
    self.criterion_cls = mse_lpips_gan.MSE_LPIPS_GAN
    self.discriminator_cls = discriminator.NLayerDiscriminator
    self.linear_scheduler = tok_utils.LambdaLinearScheduler
    self.ref = ref

  def tokenizer_module(self, stage: int):
    import make_fixtures_512 as m512  # noqa: PLC0415  (its width patches and patcher)
    path = f'train_tokenizer/model/vae_stage{stage}.py'
    m512.PATCHES.setdefault(path, {'Encoder': m512._WIDTHS_ENC, 'Decoder': m512._WIDTHS_DEC,
                                   'VAutoencoder': []})
    assert (m512.ENC, m512.DEC) == (ENC, DEC)
    return m512.load_patched(self.ref, path, f'train_stage{stage}_patched')


def _lpips_name(name: str) -> str:
  """The reference LPIPS' parameter names -> torchvision / lpips file names (the converter's)."""
  m = re.fullmatch(r'net\.slice\d\.(\d+)\.(weight|bias)', name)
  return f'features.{m.group(1)}.{m.group(2)}' if m else name


def tokenizer_fixture(env: _Env, stage: int) -> tuple[dict, dict]:
  """One generator iteration (the first after a restart at RESTART_STEP) and, from the same
  starting point on another batch, one discriminator iteration of tokenizer stage `stage`."""
  torch = env.torch
  F = torch.nn.functional  # noqa: N806
  size = IMAGE_SIZE[stage]
  prefix = size // PATCH + 1
  cfg = types.SimpleNamespace(
      img_size=size, patch_size=PATCH, aux_tokens_num=prefix, token_size=TOKEN_SIZE,
      codebook_size=CODEBOOK[stage], clustering_vq=stage == 1, reconstruction_weight=1,
      quantizer_weight=1, perceptual_weight=ALL_TERMS['perceptual_weight'],
      lpips_weight=ALL_TERMS['lpips_weight'], disc_start=0, discriminator_factor=0.1,
      discriminator_weight=0.05, lr=TOKENIZER_LR, warmup_steps=WARMUP)
  module = env.tokenizer_module(stage)
  meta = {'stage': stage, 'image_size': size, 'batch': BATCH, 'lr': TOKENIZER_LR,
          'warmup': WARMUP, 'restart_step': RESTART_STEP, 'all_terms': ALL_TERMS,
          'terms': STAGE_TERMS[stage], 'disc_hidden': DISC_HIDDEN}
  out = {}

  def build():
    """The worker's objects, as `train_tokenizer.py` builds them, with the fixture's weights."""
    model = getattr(module, f'AliTok_Stage{stage}')(cfg)  # training mode, as the worker's
    meta['tokenizer'] = _load_weights(torch, model, 'tokenizer')
    if stage == 1:
      model.quantize.embed_prob.copy_(torch.from_numpy(initial_usage(CODEBOOK[1])))
    criterion = env.criterion_cls(cfg)
    criterion.discriminator = env.discriminator_cls(hidden_channels=DISC_HIDDEN)
    meta['disc'] = _load_weights(torch, criterion.discriminator, 'disc')
    meta['convnext'] = _load_weights(torch, criterion.perceptual_loss.convnext, 'convnext')
    meta['lpips'] = _load_weights(torch, criterion.lpips_loss, 'lpips', _lpips_name)
    frozen = ('encoder', 'quantize', 'latent_tokens') if stage == 2 else ()
    trainable = []
    for name, p in model.named_parameters():
      if any(f in name for f in frozen):
        p.requires_grad = False
      else:
        trainable.append((name, p))
    optimizer = torch.optim.AdamW(params=[p for _, p in trainable], lr=cfg.lr)
    optimizer_d = torch.optim.AdamW(params=list(criterion.discriminator.parameters()), lr=cfg.lr)
    # The scheduler of a run resumed at start_step (train_tokenizer.py's warm-up block).
    sched = env.linear_scheduler(
        warm_up_steps=[max(0, cfg.warmup_steps - RESTART_STEP)], f_min=[1.], f_max=[1.],
        f_start=[min(1, RESTART_STEP / cfg.warmup_steps)], cycle_lengths=[10000000000000])
    sched.last_f = RESTART_STEP - 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=sched)
    return model, criterion, trainable, optimizer, optimizer_d, scheduler

  def images(seed):
    u8 = fixture_images(seed, size)
    return torch.from_numpy(u8.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0))

  def watch_quantizer(model):
    """Keeps the quantizer's input z (tokens x C, float64) and the codebook it meets."""
    seen = {}

    def hook(mod, args):
      seen['z'] = args[0].detach().double().numpy()[:, :, 0].transpose(0, 2, 1).reshape(
          -1, TOKEN_SIZE)
      seen['codebook'] = mod.embedding.weight.detach().double().numpy().copy()

    model.quantize.register_forward_pre_hook(hook)
    return seen

  def clustering(tag, model, seen):
    """Assignments and the clustering's nearest tokens with their runner-up gaps, and the
    codebook and usage after the iteration."""
    codes, code_gap = _margins(seen['z'], seen['codebook'], 1)
    closest, closest_gap = _margins(seen['z'], seen['codebook'], 0)
    out.update({f'{tag}codes': codes.astype(np.int16), f'{tag}code_gap': code_gap.astype(
        np.float32), f'{tag}closest': closest.astype(np.int16),
                f'{tag}closest_gap': closest_gap.astype(np.float32),
                f'{tag}codebook_after': model.quantize.embedding.weight.detach().numpy().copy(),
                f'{tag}usage_after': model.quantize.embed_prob.numpy().copy()})

  # --- the generator iteration ---
  model, criterion, trainable, optimizer, _, scheduler = build()
  meta['trainable'] = [n for n, _ in trainable]
  seen = watch_quantizer(model)
  x = images(1)
  total_step = RESTART_STEP + 1  # the worker's counter: `total_step += 1` before the forward
  recons, x_aux, extra, codes = model(x)  # stage 1 clusters the codebook in here
  recons = recons.float()
  x_aux = x_aux.float() if x_aux is not None else None
  mse, perc, vq, gan = criterion(x, recons, x_aux, extra, total_step, 'generator')
  loss = mse + perc + vq + gan if stage == 1 else mse + perc + gan
  # The terms one by one, with the reference's modules (checked against its sums below).
  terms = {'mse': F.mse_loss(x, recons),
           'perceptual': criterion.perceptual_loss(x, recons).mean(),
           'lpips': criterion.lpips_loss(x * 2 - 1, recons * 2 - 1).mean((1, 2, 3)).mean(),
           'gan_generator': -torch.mean(criterion.discriminator(recons))}
  if stage == 1:
    target = torch.cat([x[:, :, :PATCH, :PATCH], x[:, :, :PATCH, :]], -1)
    terms['prefix'] = F.mse_loss(target, x_aux)
    terms['quantizer'] = extra['quantizer_loss']
  aux_term = terms['prefix'] * 10 * 17 / 256 if stage == 1 else 0.0
  checks = {'reconstruction': (mse, terms['mse'] + aux_term),
            'perceptual + lpips': (perc, 0.1 * terms['perceptual'] + terms['lpips']),
            'gan': (gan, 0.005 * terms['gan_generator']),
            'quantizer': (vq, extra['quantizer_loss'])}
  for what, (a, b) in checks.items():
    assert abs(float(a) - float(b)) <= 1e-6 * abs(float(a)) + 1e-12, (what, float(a), float(b))
  for k, v in terms.items():
    out[f'loss/{k}'] = np.float64(v.item())
  out['loss/total'] = np.float64(loss.item())
  with torch.no_grad():  # the total of each of configs/stage1.py's phases, same forward
    for phase, w in PHASES.items():
      criterion.perceptual_weight = w['perceptual_weight']
      criterion.lpips_weight = w['lpips_weight']
      criterion.discriminator_iter_start = 0 if w['gan'] else 10**9
      parts = criterion(x, recons, x_aux, extra, total_step, 'generator')
      out[f'phase_total/{phase}'] = np.float64(sum(parts[:3] if stage == 1 else parts[:2])
                                               + parts[3])
    criterion.perceptual_weight, criterion.lpips_weight = cfg.perceptual_weight, cfg.lpips_weight
    criterion.discriminator_iter_start = cfg.disc_start
  params = [p for _, p in trainable]
  names = meta['trainable']

  def grads_of(value, **kwargs):
    g = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True, **kwargs)
    return {n: (gi if gi is not None else torch.zeros_like(p)).double().numpy()
            for n, gi, p in zip(names, g, params)}

  for k, v in terms.items():
    _store(out, f'grad/{k}', grads_of(v))
  if stage == 2:  # (at 128 pixels: 4x cheaper for the tests than stage 1's 256)
    # LPIPS at the same input on both sides, in float64 (its float32 gradient is only good to
    # ~1e-4: a difference of nearly equal unit-normalised VGG features): image 0's
    # reconstruction, its distance and image gradient, and that gradient's share of the loss
    # (/ batch) pulled back through the float32 training graph.
    lpips64 = copy.deepcopy(criterion.lpips_loss).double()
    r0 = recons[:1].detach().double().requires_grad_(True)
    d0 = lpips64(x[:1].double() * 2 - 1, r0 * 2 - 1).mean()
    (g0,) = torch.autograd.grad(d0, r0)
    out['lpips0/recon'] = recons[:1].detach().numpy()
    out['lpips0/value'] = np.float64(d0.item())
    _store(out, 'lpips0/image_grad', {'image_grad': g0.numpy()})
    share = torch.zeros_like(recons)
    share[:1] = (g0 / BATCH).float()
    _store(out, 'grad/lpips0', grads_of(recons, grad_outputs=share))
  optimizer.zero_grad()
  loss.backward()
  _store(out, 'grad/total', {n: p.grad.double().numpy() for n, p in trainable})
  out['lr'] = np.float64(optimizer.param_groups[0]['lr'])
  optimizer.step()
  scheduler.step()
  _store(out, 'after', {n: p.detach().double().numpy() for n, p in trainable})
  if stage == 1:
    clustering('', model, seen)
    assert np.array_equal(out['codes'], codes.numpy())

  # --- the discriminator iteration, from the same start, on the next batch ---
  model, criterion, _, _, optimizer_d, _ = build()
  seen = watch_quantizer(model)
  x = images(2)
  recons, x_aux, extra, _ = model(x)
  recons = recons.float().detach()
  d_loss, logit_real, logit_fake = criterion(x, recons, x_aux, extra, total_step + 1,
                                             'discriminator')
  # The same loss with a float64 copy of D (its float32 gradient is only good to ~5e-3 of a
  # tensor's scale: sums over 256 x 256 positions of terms of both signs).
  disc = criterion.discriminator
  criterion.discriminator = copy.deepcopy(disc).double()
  loss64 = criterion._forward_discriminator(x.double(), recons.double(), total_step + 1)[0]
  grad64 = torch.autograd.grad(loss64, list(criterion.discriminator.parameters()))
  criterion.discriminator = disc
  optimizer_d.zero_grad()
  d_loss.backward()
  named = dict(disc.named_parameters())
  out.update({'disc/loss': np.float64(d_loss.item()), 'disc/logit_real': np.float64(logit_real),
              'disc/logit_fake': np.float64(logit_fake),
              'disc/lr': np.float64(optimizer_d.param_groups[0]['lr'])})
  _store(out, 'disc/grad', {n: p.grad.double().numpy() for n, p in named.items()})
  _store(out, 'disc/grad64', {n: g.numpy() for n, g in zip(named, grad64)})
  optimizer_d.step()
  _store(out, 'disc/after', {n: p.detach().double().numpy() for n, p in named.items()})
  if stage == 1:
    clustering('disc/', model, seen)
  meta['sha1'] = {kind: weights_sha1(state_dict(kind, meta[kind]))
                  for kind in ('tokenizer', 'disc', 'convnext', 'lpips')}
  return meta, out


class _OneProcess:
  """What `train_one_epoch_generator` asks of `accelerate.Accelerator`: one CPU process, no
  mixed precision, no accumulation; `clip_grad_norm_` keeps the norms it returns."""

  device = 'cpu'
  sync_gradients = True
  is_main_process = False
  num_processes = 1
  mixed_precision = 'no'

  def __init__(self, torch):
    self.torch = torch
    self.grad_norms = []

  def unwrap_model(self, model):
    return model

  def accumulate(self, models):
    del models
    return contextlib.nullcontext()

  def gather(self, value):
    return value

  def backward(self, loss):
    loss.backward()

  def clip_grad_norm_(self, params, max_norm):
    norm = self.torch.nn.utils.clip_grad_norm_(params, max_norm)
    self.grad_norms.append(float(norm))
    return norm

  def print(self, *args, **kwargs):
    del args, kwargs

  def log(self, *args, **kwargs):
    del args, kwargs


def ar_config(ref: str, variant: str = 'b', **overrides):
  """The reference's configs/alitok_{variant}.yaml (OmegaConf, as `get_config` loads it)."""
  from omegaconf import OmegaConf  # noqa: PLC0415
  return OmegaConf.merge(OmegaConf.load(os.path.join(ref, f'configs/alitok_{variant}.yaml')),
                         OmegaConf.create(overrides))


def ar_fixture(env: _Env) -> tuple[dict, dict]:
  """AR['steps'] iterations of the reference's `train_one_epoch_generator` from scratch (its
  first step has learning rate 0: the warm-up's), dropouts off but label dropout on."""
  torch = env.torch
  import logging  # noqa: PLC0415
  from modeling.ar import ARModel  # noqa: PLC0415
  from modeling.modules import ARLoss  # noqa: PLC0415
  from utils import train_utils  # noqa: PLC0415

  config = ar_config(env.ref, **{
      'experiment': {'log_every': 10**9, 'log_grad_norm_every': 10**9, 'save_every': 10**9,
                     'generate_every': 10**9, 'output_dir': '/tmp/alitok_train_fixture_ar'},
      'model': {'vq_model': {'codebook_size': AR['codebook']},
                'generator': {'hidden_size': AR['width'], 'num_hidden_layers': AR['depth'],
                              'num_attention_heads': AR['heads'], 'dropout': 0.0,
                              'attn_drop': 0.0, 'tok_dropout': 0.0,
                              'class_label_dropout': AR['label_dropout'],
                              'condition_num_classes': AR['classes']}},
      'dataset': {'params': {'pretokenization': 'in memory'}},
      'optimizer': {'params': {'learning_rate': AR['lr']}},
      'lr_scheduler': {'params': {'warmup_steps': AR['warmup'], 'end_lr': AR['end_lr']}},
      'training': {'per_gpu_batch_size': AR['batch'], 'max_train_steps': AR['total'],
                   'use_ema': False}})
  logger = logging.getLogger('make_train_fixtures')
  batches = [(torch.from_numpy(b['labels']), torch.from_numpy(b['codes'])) for b in ar_batches()]

  for label_seed in range(100):
    model = ARModel(config)
    shapes = _load_weights(torch, model, 'ar')
    named = list(model.named_parameters())
    loss_module = ARLoss(config)
    optimizer = train_utils.create_optimizer(config, logger, model, loss_module)
    records, conditions, metrics = [], [], []
    accelerator = _OneProcess(torch)
    scheduler, _ = train_utils.create_lr_scheduler(config, logger, accelerator, optimizer)
    real_step = optimizer.step  # the scheduler's step-counting wrapper

    def step(*args, _real=real_step, **kwargs):
      rec = {'lr': [g['lr'] for g in optimizer.param_groups],
             'grad': {n: p.grad.double().numpy().copy() for n, p in named}}
      result = _real(*args, **kwargs)
      rec['after'] = {n: p.detach().double().numpy().copy() for n, p in named}
      records.append(rec)
      return result

    optimizer.step = step
    real_pre = model.preprocess_condition

    def preprocess(condition, cond_drop_prob=0.0, _real=real_pre):
      dropped = _real(condition, cond_drop_prob=cond_drop_prob)
      conditions.append(dropped.numpy().copy())
      return dropped

    model.preprocess_condition = preprocess
    loss_module.register_forward_hook(lambda m, i, o: metrics.append(o[1]))
    torch.manual_seed(label_seed)
    train_utils.train_one_epoch_generator(config, logger, accelerator, model, None, loss_module,
                                          optimizer, scheduler, batches, None, 0)
    none_id = model.none_condition_id
    if all(0 < (c == none_id).sum() < len(c) for c in conditions):
      break  # every batch has dropped and kept labels
  decayed = {id(p) for g in optimizer.param_groups if g['weight_decay'] > 0 for p in g['params']}
  meta = {'ar': shapes, 'sha1': {'ar': weights_sha1(state_dict('ar', shapes))},
          'decayed': [n for n, p in named if id(p) in decayed], 'label_seed': label_seed,
          'none_condition_id': int(none_id), 'codebook_offset': AR['codebook'] + 1,
          'betas': [config.optimizer.params.beta1, config.optimizer.params.beta2],
          'weight_decay': config.optimizer.params.weight_decay,
          'max_grad_norm': config.training.max_grad_norm, **AR}
  out = {}
  for i, (rec, cond, m) in enumerate(zip(records, conditions, metrics)):
    assert len(set(rec['lr'])) == 1
    out.update({f'step{i}/condition': cond, f'step{i}/loss': np.float64(m['loss'].item()),
                f'step{i}/accuracy': np.float64(m['correct_tokens'].item()),
                f'step{i}/lr': np.float64(rec['lr'][0]),
                f'step{i}/grad_norm': np.float64(accelerator.grad_norms[i])})
    _store(out, f'step{i}/grad', rec['grad'])  # clipped: what the optimizer was given
    _store(out, f'step{i}/after', rec['after'])
  assert len(records) == AR['steps'], len(records)
  return meta, out


def schedules(env: _Env) -> dict:
  """Learning rates of the reference's schedulers at their boundaries, at the released settings.

  Tokenizer (train_tokenizer/config.py: lr, warmup_steps): the generator's LambdaLR over
  `LambdaLinearScheduler` counts generator iterations; a run resumed from last.pth at start_step
  s builds it anew (train_tokenizer.py), giving lr * min(1, (s + k) / warmup) at its k-th
  generator iteration. The discriminator's AdamW has no scheduler: its rate is `lr` throughout.
  AR (configs/alitok_{b,l,xl}.yaml): `get_scheduler('cosine', ...)` by optimizer step.
  """
  torch = env.torch
  import config as tok_config  # noqa: PLC0415  (train_tokenizer/config.py)
  from utils.lr_schedulers import get_scheduler  # noqa: PLC0415
  cfg = tok_config.cfg
  w = cfg.warmup_steps

  def generator(start):
    sched = env.linear_scheduler(warm_up_steps=[max(0, w - start)], f_min=[1.], f_max=[1.],
                                 f_start=[min(1, start / w)], cycle_lengths=[10000000000000])
    return lambda k: cfg.lr * sched(k)

  fresh = [0, 1, 2, w // 2, w - 1, w, w + 1, 3 * w]
  out = {'tokenizer': {'lr': cfg.lr, 'warmup_steps': w,
                       'fresh': [[n, generator(0)(n)] for n in fresh],
                       'restarts': [[s, [generator(s)(k) for k in range(3)]]
                                    for s in (1, 4, w - 1, w, 3 * w)],
                       'discriminator_lr': cfg.lr}}
  for variant in ('b', 'l', 'xl'):
    c = ar_config(env.ref, variant)
    base, end = c.lr_scheduler.params.learning_rate, c.lr_scheduler.params.end_lr
    warm, total = c.lr_scheduler.params.warmup_steps, c.training.max_train_steps
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
    fn = get_scheduler('cosine', opt, num_warmup_steps=warm, num_training_steps=total,
                       base_lr=base, end_lr=end).lr_lambdas[0]
    steps = [0, 1, 2, warm // 2, warm - 1, warm, warm + 1, (warm + total) // 2, total - 1, total]
    out[f'ar_{variant}'] = {'lr': base, 'end_lr': end, 'warmup_steps': warm,
                            'total_steps': total, 'lrs': [[s, base * fn(s)] for s in steps]}
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('ref')
  ap.add_argument('out')
  ap.add_argument('--only', default='stage1,stage2,ar,schedules')
  args = ap.parse_args()
  os.makedirs(args.out, exist_ok=True)
  env = _Env(args.ref)
  only = args.only.split(',')

  def write(name, meta, arrays):
    path = os.path.join(args.out, f'{name}.npz')
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
    print(f'{path}: {os.path.getsize(path) / 1e6:.2f} MB, {len(arrays)} arrays', flush=True)

  for stage in (1, 2):
    if f'stage{stage}' in only:
      write(f'train_stage{stage}', *tokenizer_fixture(env, stage))
  if 'ar' in only:
    write('train_ar', *ar_fixture(env))
  if 'schedules' in only:
    with open(os.path.join(args.out, 'train_schedules.json'), 'w') as f:
      json.dump(schedules(env), f, indent=1)


if __name__ == '__main__':
  main()
