"""Reference and sample batches in the ADM evaluator's npz format: read, write, stream.

Format of openai/guided-diffusion `evaluations/` (e.g. `VIRTUAL_imagenet256_labeled.npz`), all keys
optional but used as follows:
  arr_0    uint8 [N, H, W, 3] images (a reference batch holds 10,000 of them for precision/recall;
           a sample batch holds the 50,000 samples)
  mu       float64 [2048]        mean of the Inception pool features of the *whole* data set
  sigma    float64 [2048, 2048]  their covariance (N - 1)
  mu_s, sigma_s                  the same for the sFID features (mixed_6/conv, 7 channels, 2023)
When `mu` is present the ADM evaluator reads `mu_s` too, so statistics files always carry both
pairs. This module adds two keys that the ADM evaluator ignores:
  pool_features      float32 [N, 2048] pool features of arr_0 (precision/recall without recomputing)
  feature_extractor  a string naming the Inception that made the statistics (absent in ADM's files,
                     which were made by the TF graph);
  preprocess         'adm' or 'pytorch_fid': how the images were resized and scaled for the
                     Inception (`models/inception.py`). A file without it is taken as ADM's
                     ('adm'), except the files this package wrote before it recorded the key
                     (`feature_extractor` == EXTRACTOR), which were made with 'pytorch_fid'.
Statistics from two preprocessings are never compared: `check_same_preprocess` refuses them with a
PreprocessMismatchError naming both files and both choices.

Large `arr_0` arrays are memory-mapped straight from the (uncompressed) npz, so 50,000 images are
read batch by batch, never all at once; each member's npy header is checked against the bytes the
member holds first (`data/npy_files.py`). Whatever is wrong with a file (not a zip, a missing or
unreadable array, wrong shapes or dtypes, a sigma that is no covariance: `fid.check_statistics`)
raises BatchFormatError, a ValueError, with one line naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import struct
import zipfile
import zlib
from typing import Any

import numpy as np

from alitok_jax import errors
from alitok_jax.data import npy_files
from alitok_jax.eval import fid as fid_lib
from alitok_jax.models.inception import DEFAULT_PREPROCESS, PREPROCESS_MODES

# What this package's statistics are made with; ADM's reference files carry no such key.
EXTRACTOR = 'alitok_jax InceptionV3 (pytorch-fid port of TF inception-2015-12-05)'
ADM_EXTRACTOR = 'ADM evaluator TF graph (inception-2015-12-05, classify_image_graph_def.pb)'


class BatchFormatError(errors.UserError, ValueError):
  """An npz file is not a usable ADM-format batch."""


class PreprocessMismatchError(errors.UserError, ValueError):
  """Two feature sets of one comparison come from different Inception preprocessings."""


def check_same_preprocess(first: str, first_mode: str, second: str, second_mode: str) -> None:
  """Refuses to compare features of `first` (made with `first_mode`) and `second` unless both
  preprocessings are the same: FID between them would measure the preprocessing too."""
  if first_mode != second_mode:
    raise PreprocessMismatchError(
        f'{first} has preprocess={first_mode!r} but {second} has preprocess={second_mode!r}: '
        f'features of two preprocessings are not comparable; set --config.preprocess='
        f'{first_mode} or remake {first} with preprocess={second_mode!r}')


# What reading a broken zip member can raise, deep in zipfile / zlib / numpy.
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
_REMAKE = 're-download or re-make the file'


def _member(zf: zipfile.ZipFile, key: str, path: str) -> zipfile.ZipInfo:
  try:
    return zf.getinfo(f'{key}.npy')
  except KeyError:
    have = sorted(n[:-4] for n in zf.namelist() if n.endswith('.npy'))
    raise BatchFormatError(f'{path} has no {key!r} array (it has: {", ".join(have) or "none"})'
                           ) from None


def npz_keys(path: str | os.PathLike) -> list[str]:
  """The array names inside an npz file."""
  path = _existing(path)
  try:
    with zipfile.ZipFile(path) as zf:
      return sorted(n[:-4] for n in zf.namelist() if n.endswith('.npy'))
  except _READ_ERRORS as e:
    raise BatchFormatError(f'{path} is not a readable npz file ({e}); {_REMAKE}') from None


def _existing(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'batch file {path} does not exist')
  if not zipfile.is_zipfile(path):
    raise BatchFormatError(f'{path} is not an npz file (expected np.savez output, as the ADM '
                           'evaluator reads)')
  return path


def open_npz_array(path: str | os.PathLike, key: str) -> np.ndarray:
  """One array of an npz; memory-mapped (read-only) when stored uncompressed, else loaded.

  Raises BatchFormatError, naming the file and the array, when the array is missing, is not a
  readable npy array, or holds fewer rows than its header declares.
  """
  path = _existing(path)
  name = f'{path} ({key})'
  try:
    with zipfile.ZipFile(path) as zf:
      info = _member(zf, key, path)
      if info.compress_type != zipfile.ZIP_STORED:
        with zf.open(info) as f:
          return np.lib.format.read_array(f, allow_pickle=False)
      with zf.open(info) as f:
        header = npy_files.read_header(f, name)
    with open(path, 'rb') as raw:  # the member's data follows its local file header
      raw.seek(info.header_offset)
      local = raw.read(30)
    if len(local) < 30 or local[:4] != b'PK\x03\x04':
      raise BatchFormatError(f'{name}: the zip entry is damaged (no local header); {_REMAKE}')
    name_len, extra_len = struct.unpack('<HH', local[26:30])
    offset = info.header_offset + 30 + name_len + extra_len + header.data_offset
    return npy_files.memmap(path, header, offset, available=info.file_size - header.data_offset,
                            name=name, hint=_REMAKE)
  except npy_files.NpyFileError as e:
    raise BatchFormatError(str(e)) from None
  except BatchFormatError:
    raise
  except _READ_ERRORS as e:
    raise BatchFormatError(f'{name} cannot be read ({type(e).__name__}: {e}); {_REMAKE}'
                           ) from None


def read_images(path: str | os.PathLike, key: str = 'arr_0') -> np.ndarray:
  """The uint8 [N, H, W, 3] images of a batch (memory-mapped), checked."""
  images = open_npz_array(path, key)
  if images.ndim != 4 or images.shape[-1] != 3:
    hint = (' This looks like NCHW; ADM batches are NHWC.' if images.ndim == 4
            and images.shape[1] == 3 else '')
    raise BatchFormatError(f'{path}: {key} has shape {list(images.shape)}, expected '
                           f'[N, H, W, 3] images.{hint}')
  if images.dtype != np.uint8:
    raise BatchFormatError(f'{path}: {key} has dtype {images.dtype}; ADM batches hold uint8 '
                           'images in 0..255 (convert with np.clip(np.round(x * 255), 0, 255)'
                           '.astype(np.uint8))')
  return images


@dataclasses.dataclass
class ReferenceBatch:
  """What an ADM-format npz holds (None where a key is absent)."""

  path: str
  mu: np.ndarray | None = None
  sigma: np.ndarray | None = None
  mu_s: np.ndarray | None = None
  sigma_s: np.ndarray | None = None
  pool_features: np.ndarray | None = None
  extractor: str | None = None  # None: not recorded (ADM's files: the TF graph)
  preprocess: str = 'adm'  # how its features were made (absent: ADM's)
  num_images: int = 0  # rows of arr_0 (0: no images)
  image_size: tuple[int, int] | None = None

  @property
  def has_statistics(self) -> bool:
    return self.mu is not None

  def images(self) -> np.ndarray:
    if not self.num_images:
      raise BatchFormatError(f'{self.path} holds no images (arr_0)')
    return read_images(self.path)


def read_reference_batch(path: str | os.PathLike) -> ReferenceBatch:
  """Reads the statistics (and notes the images) of an ADM-format npz, every part checked.

  Raises BatchFormatError naming the file for anything unusable, e.g. a sigma that is not a
  covariance (not symmetric, not positive semi-definite, NaN/inf: `fid.check_statistics`).
  """
  keys = set(npz_keys(path))
  path = os.fspath(path)
  batch = ReferenceBatch(path=path)
  if ({'mu', 'sigma'} & keys and not {'mu', 'sigma'} <= keys) or (
      {'mu_s', 'sigma_s'} & keys and not {'mu_s', 'sigma_s'} <= keys):
    raise BatchFormatError(f'{path}: mu/sigma and mu_s/sigma_s come in pairs; found '
                           f'{sorted(keys)}')
  for mu_key, sigma_key in (('mu', 'sigma'), ('mu_s', 'sigma_s')):
    if mu_key in keys:
      try:
        mu, sigma = fid_lib.check_statistics(open_npz_array(path, mu_key),
                                             open_npz_array(path, sigma_key),
                                             f'{path}: {mu_key}/{sigma_key}')
      except fid_lib.StatisticsError as e:
        raise BatchFormatError(str(e)) from None
      setattr(batch, mu_key, mu)
      setattr(batch, sigma_key, sigma)
  if 'feature_extractor' in keys:
    batch.extractor = _string(path, 'feature_extractor')
  if 'preprocess' in keys:
    batch.preprocess = _string(path, 'preprocess')
    if batch.preprocess not in PREPROCESS_MODES:
      raise BatchFormatError(f'{path}: preprocess is {batch.preprocess!r}, expected one of '
                             f'{", ".join(PREPROCESS_MODES)}; {_REMAKE}')
  elif batch.extractor == EXTRACTOR:  # written by this package before the key existed
    batch.preprocess = 'pytorch_fid'
  if 'pool_features' in keys:
    pool = open_npz_array(path, 'pool_features')
    d = batch.mu.shape[0] if batch.mu is not None else None
    if pool.ndim != 2 or pool.dtype.kind not in 'iuf' or d not in (None, pool.shape[1]):
      raise BatchFormatError(f'{path}: pool_features has {pool.dtype} {list(pool.shape)}, '
                             f'expected real [N, {d or "D"}] features (one row per image)')
    batch.pool_features = pool
  if 'arr_0' in keys:
    images = read_images(path)
    batch.num_images, batch.image_size = len(images), tuple(images.shape[1:3])
  if batch.mu is None and not batch.num_images:
    raise BatchFormatError(f'{path} has neither statistics (mu, sigma) nor images (arr_0); '
                           f'it has: {", ".join(sorted(keys)) or "nothing"}')
  return batch


def _string(path: str, key: str) -> str:
  value = open_npz_array(path, key)
  if value.shape != () or value.dtype.kind not in 'US':
    raise BatchFormatError(f'{path}: {key} must be a string, got {value.dtype} '
                           f'{list(value.shape)}')
  return str(value[()])


def write_reference_batch(path: str | os.PathLike, *, mu: np.ndarray, sigma: np.ndarray,
                          mu_s: np.ndarray | None = None, sigma_s: np.ndarray | None = None,
                          pool_features: np.ndarray | None = None,
                          images: np.ndarray | None = None,
                          extractor: str = EXTRACTOR, preprocess: str = DEFAULT_PREPROCESS,
                          **extra: Any) -> None:
  """Writes an ADM-format npz (uncompressed, like np.savez) atomically.

  The ADM evaluator reads `mu_s`/`sigma_s` whenever `mu` is present: pass them too, or the file
  serves this package only. `preprocess` ('adm' or 'pytorch_fid') is how the features were made;
  it is always stored (callers pass the one they extracted with).
  """
  if preprocess not in PREPROCESS_MODES:
    raise ValueError(f'preprocess must be one of {PREPROCESS_MODES}, got {preprocess!r}')
  arrays: dict[str, np.ndarray] = {'mu': np.asarray(mu, np.float64),
                                   'sigma': np.asarray(sigma, np.float64)}
  if (mu_s is None) != (sigma_s is None):
    raise ValueError('pass mu_s and sigma_s together')
  if mu_s is not None:
    arrays.update(mu_s=np.asarray(mu_s, np.float64), sigma_s=np.asarray(sigma_s, np.float64))
  if pool_features is not None:
    arrays['pool_features'] = np.asarray(pool_features, np.float32)
  if images is not None:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}')
    arrays['arr_0'] = images
  arrays['feature_extractor'] = np.asarray(extractor)
  arrays['preprocess'] = np.asarray(preprocess)
  arrays.update({k: np.asarray(v) for k, v in extra.items()})
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + '.tmp.npz')
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
