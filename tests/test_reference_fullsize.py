"""Full-size parity against the reference implementation itself (opt-in: slow, needs torch).

Set ALITOK_REFERENCE to a checkout of github.com/ali-vilab/alitok and run with --runslow. Random
full-size models (AR-B, the released tokenizer layout) are written out by our converter, loaded
with `load_state_dict(strict=True)` into the reference's own modules, and both compute on the
same inputs. This checks the key table, layouts and numerics at the released sizes, which the
tiny fixtures cannot.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest

from alitok_jax import Generator, Tokenizer
from alitok_jax.convert import run
from alitok_jax.models import variants

pytestmark = [pytest.mark.slow, pytest.mark.torch]


@pytest.fixture(scope='module')
def reference_repo():
  path = os.environ.get('ALITOK_REFERENCE')
  if not path or not os.path.isdir(os.path.join(path, 'modeling')):
    pytest.skip('set ALITOK_REFERENCE to a checkout of ali-vilab/alitok')
  pytest.importorskip('torch')
  pytest.importorskip('einops')
  sys.path.insert(0, path)
  yield path
  sys.path.remove(path)


def _rel(ours, ref) -> float:
  return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


def test_ar_b_full_size(reference_repo, tmp_path):
  import torch  # noqa: PLC0415
  from modeling.ar import ARModel  # noqa: PLC0415

  params = Generator.random(variants.AR['B'], seed=1).params
  rng = np.random.default_rng(3)  # the reference zero-initialises the head: give it weights
  params['output']['kernel'] = rng.normal(0, 0.02, params['output']['kernel'].shape)
  gen = Generator(variants.AR['B'], params)
  gen.save(tmp_path / 'ar')
  run.model_dir_to_torch(tmp_path / 'ar', tmp_path / 'ar.pth')
  ns = types.SimpleNamespace
  cfg = ns(model=ns(
      generator=ns(hidden_size=768, num_hidden_layers=24, num_attention_heads=16,
                   image_seq_len=273, condition_num_classes=1000, dropout=0.1, attn_drop=0.1,
                   tok_dropout=0.1, get=lambda key, default: default),
      vq_model=ns(codebook_size=4096)))
  ref = ARModel(cfg).eval()
  ref.load_state_dict(torch.load(tmp_path / 'ar.pth'), strict=True)
  ids = rng.integers(0, 4096, (2, 273))
  labels = np.array([7, 999])
  with torch.no_grad():
    expected = ref(torch.from_numpy(ids), torch.from_numpy(labels) + 4097).numpy()
  assert _rel(gen.logits(ids, labels), expected) < 1e-5


def test_tokenizer_full_size(reference_repo, tmp_path):
  import torch  # noqa: PLC0415
  from modeling.alitok import AliTok  # noqa: PLC0415

  tok = Tokenizer.random(variants.TOKENIZER['stage2'], seed=2)
  tok.save(tmp_path / 'tok')
  run.model_dir_to_torch(tmp_path / 'tok', tmp_path / 'tok.pth')
  ref = AliTok().eval()
  ref.load_state_dict(torch.load(tmp_path / 'tok.pth'), strict=True)
  images = np.random.default_rng(1).random((2, 256, 256, 3), np.float32)
  with torch.no_grad():
    z = ref.encoder(torch.from_numpy(images.transpose(0, 3, 1, 2)), ref.latent_tokens)
    codes = ref.quantize(z)[1]['min_encoding_indices'].view(2, 273)
    decoded = ref.decode_tokens(codes).numpy().transpose(0, 2, 3, 1)
  assert _rel(tok.latents(images), z[:, :, 0].numpy().transpose(0, 2, 1)) < 1e-5
  # Random weights give no margin between codes, so a few argmins may flip at 1e-6 noise.
  assert (np.asarray(tok.encode(images)) == codes.numpy()).mean() > 0.99
  assert _rel(tok.decode(codes.numpy()), decoded) < 1e-5
