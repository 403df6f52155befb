"""Where the rFID command's images come from: a folder, a TFDS split, or built-in test patterns.

Every source gives random access by row (`read(a, b)` -> uint8 [b - a, S, S, 3]), so each process
of a multi-host run reads only its own rows. Real images are centre-cropped to the tokenizer's
size the ADM way (`data/image_io.py:center_crop`: box-halve, bicubic resize of the shorter side,
centre square), which is how the reference evaluations prepare ImageNet val at 256.
Files are decoded by `image_io.read_image` (decompression bombs refused, 16-bit images scaled to
8 bit). Unlike training, an evaluation never skips a file: every image of the set counts, so an
unreadable one (corrupt, truncated, a decompression bomb) stops the run with its path named.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
from typing import Protocol

import numpy as np
from PIL import Image

from alitok_jax import errors
from alitok_jax.data import image_io


class ImageReadError(errors.UserError, ValueError):
  """An image of an evaluation set that cannot be read (the message names the file)."""


class ImageSource(Protocol):
  name: str

  def __len__(self) -> int: ...

  def read(self, start: int, stop: int) -> np.ndarray: ...


class ArraySource:
  """Images already in memory (uint8 [N, S, S, 3])."""

  def __init__(self, images: np.ndarray, name: str):
    self.images, self.name = images, name

  def __len__(self) -> int:
    return len(self.images)

  def read(self, start: int, stop: int) -> np.ndarray:
    return np.asarray(self.images[start:stop])


class FolderSource:
  """Image files under a folder (recursively, sorted), decoded and cropped by a thread pool."""

  def __init__(self, folder: str, size: int, workers: int = 16):
    self.paths = image_io.list_images(folder)
    if not self.paths:
      raise ValueError(f'no images under {folder} (looked for '
                       f'{", ".join(image_io.IMAGE_SUFFIXES)})')
    self.size, self.name = size, folder
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(workers, 1))

  def __len__(self) -> int:
    return len(self.paths)

  def _load(self, path: pathlib.Path) -> np.ndarray:
    try:
      return image_io.center_crop(image_io.read_image(path), self.size)
    except image_io.UNREADABLE as e:
      reason = str(e).replace(f'{path}: ', '', 1)
      raise ImageReadError(f'cannot read image {path}: {type(e).__name__}: {reason} (remove '
                           'or replace it: every image of an evaluation set counts)') from e

  def read(self, start: int, stop: int) -> np.ndarray:
    return np.stack(list(self._pool.map(self._load, self.paths[start:stop])))


class TFDSSource:
  """A TFDS split read through `tfds.data_source` (random access; needs the prepared data)."""

  def __init__(self, spec: str, size: int, data_dir: str = ''):
    name, _, split = spec.partition(':')
    if not split:
      raise ValueError(f"config.tfds must be 'name:split', e.g. 'imagenet2012:validation', "
                       f'got {spec!r}')
    import tensorflow_datasets as tfds  # noqa: PLC0415 (slow import, only when asked for)

    try:
      self.source = tfds.data_source(name, split=split, data_dir=data_dir or None)
    except Exception as e:  # noqa: BLE001 - TFDS raises many kinds for missing data
      raise ValueError(f'cannot open TFDS {spec} (data_dir {data_dir or "default"}): {e}. '
                       'Prepare it first (ImageNet needs the manual download: see the TFDS '
                       'imagenet2012 page), or point config.images at a folder of images.') from e
    self.size, self.name = size, f'tfds:{spec}'

  def __len__(self) -> int:
    return len(self.source)

  def read(self, start: int, stop: int) -> np.ndarray:
    out = []
    for i in range(start, stop):
      out.append(image_io.center_crop(Image.fromarray(np.asarray(self.source[i]['image'])),
                                      self.size))
    return np.stack(out)
