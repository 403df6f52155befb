"""Converts between PyTorch AliTok checkpoints and this package's model directories, both ways.

torch -> JAX: read the `torch.save` file without PyTorch (`torch_format`), find the state dict
(bare or under `model_state`), detect the model and its sizes (`detect`), map every key strictly
(`keys`), and write a model directory (`checkpoint.save_model_dir`): Orbax params + config.json.

JAX -> torch: read a model directory and write a state dict that the reference code loads with
`model.load_state_dict(torch.load(path))`; JAX -> torch -> JAX is bit-identical.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import jax
import numpy as np

from alitok_jax import checkpoint
from alitok_jax.convert import convnext as convnext_keys
from alitok_jax.convert import detect, keys, torch_format, torch_legacy
from alitok_jax.convert import inception as inception_keys
from alitok_jax.models import build
from alitok_jax.models.convnext import ConvNeXtConfig
from alitok_jax.models.inception import InceptionConfig
from alitok_jax.models.lpips import LPIPSConfig
from alitok_jax.models.variants import ARConfig, TokenizerConfig


@dataclasses.dataclass(frozen=True)
class ConversionReport:
  direction: str  # 'torch->jax' or 'jax->torch'
  source: str
  destination: str
  config: TokenizerConfig | ARConfig
  num_params: int
  extras: tuple[str, ...] = ()

  def summary(self) -> str:
    cfg = self.config
    if isinstance(cfg, ARConfig):
      what = (f'AR model: width {cfg.width}, depth {cfg.depth}, heads {cfg.heads}, '
              f'{cfg.codebook_size} codes, {cfg.num_classes} classes')
    elif isinstance(cfg, ConvNeXtConfig):
      what = (f'ConvNeXt: stages (channels, blocks) {list(cfg.stages)}, '
              f'{cfg.num_classes} classes')
    elif isinstance(cfg, InceptionConfig):
      what = f'FID Inception-v3 (pytorch-fid), {cfg.num_classes} classes'
    else:
      what = (f'tokenizer stage {cfg.stage}: encoder {cfg.encoder.width}x{cfg.encoder.layers} '
              f'({cfg.encoder.heads} heads), decoder {cfg.decoder.width}x{cfg.decoder.layers} '
              f'({cfg.decoder.heads} heads), {cfg.num_latent_tokens} tokens, '
              f'codebook {cfg.codebook_size}x{cfg.token_size}')
    extras = f' (+ {", ".join(self.extras)})' if self.extras else ''
    return (f'{self.direction}: {self.source} -> {self.destination}\n  {what}\n'
            f'  {self.num_params:,} parameters ({self.num_params / 1e6:.1f}M){extras}')


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The state dict of a torch checkpoint file (zip or legacy format), as numpy arrays."""
  return detect.unwrap_state_dict(torch_legacy.load_any(path), str(path))


def torch_to_model_dir(src: str | os.PathLike, dst: str | os.PathLike, *,
                       encoder_heads: int | None = None, decoder_heads: int | None = None,
                       overwrite: bool = False) -> ConversionReport:
  """Converts a torch checkpoint file into a model directory."""
  sd = read_torch_state_dict(src)
  config = detect.infer_config(sd, encoder_heads=encoder_heads, decoder_heads=decoder_heads,
                               source=str(src))
  if isinstance(config, ConvNeXtConfig):
    params = convnext_keys.to_params(sd, build.abstract_params(config), config, source=str(src))
  elif isinstance(config, InceptionConfig):
    params = inception_keys.to_params(sd, build.abstract_params(config), source=str(src))
  else:
    params = keys.to_params(sd, build.abstract_params(config), source=str(src))
  buffers = keys.split_buffers(sd)
  usage = buffers.get('codebook_usage')
  if usage is not None and (not isinstance(config, TokenizerConfig)
                            or usage.shape != (config.codebook_size,)):
    raise keys.ConversionError(f'{src}: quantize.embed_prob has shape {list(usage.shape)}, '
                               'expected one entry per code')
  checkpoint.save_model_dir(dst, config, params, codebook_usage=usage, overwrite=overwrite,
                            metadata={'converted_from': os.path.basename(str(src))})
  return ConversionReport('torch->jax', str(src), str(dst), config, build.count_params(config),
                          tuple(buffers))


def load_model_dir_numpy(directory: str | os.PathLike) -> tuple[Any, dict[str, Any], np.ndarray | None]:
  """(config, params as numpy, codebook usage or None) of a model directory."""
  config, _ = checkpoint.load_config(directory)
  params = checkpoint.restore_params(directory, build.abstract_params(config))
  params = jax.tree.map(np.asarray, params)
  return config, params, checkpoint.restore_codebook_usage(directory)


def model_dir_to_torch(src: str | os.PathLike, dst: str | os.PathLike, *,
                       overwrite: bool = False) -> ConversionReport:
  """Converts a model directory into a torch state-dict file (float32, the reference's names)."""
  dst_path = pathlib.Path(dst)
  if dst_path.exists() and not overwrite:
    raise checkpoint.CheckpointError(f'{dst} exists (pass --overwrite to replace it)')
  config, params, usage = load_model_dir_numpy(src)
  if isinstance(config, LPIPSConfig):
    raise keys.ConversionError(f'{src} is an LPIPS model directory; it converts one way only '
                               '(from torchvision VGG16 + lpips vgg.pth)')
  if isinstance(config, ConvNeXtConfig):
    sd = convnext_keys.to_state_dict(params, config)
  elif isinstance(config, InceptionConfig):
    sd = inception_keys.to_state_dict(params)
  else:
    sd = keys.to_state_dict(params)
  extras = ()
  if usage is not None:
    sd['quantize.embed_prob'] = usage
    extras = ('codebook_usage',)
  dst_path.parent.mkdir(parents=True, exist_ok=True)
  torch_format.save_torch_state_dict(dst_path, sd)
  return ConversionReport('jax->torch', str(src), str(dst), config, build.count_params(config),
                          extras)


def is_model_dir(path: str | os.PathLike) -> bool:
  return pathlib.Path(path, checkpoint.CONFIG_FILE).is_file()
