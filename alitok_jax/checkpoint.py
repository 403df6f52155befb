"""Params-only model directories: what the converter writes and the API and samplers read.

A model directory holds
  config.json        {"format": 1, "model": <TokenizerConfig / ARConfig as a dict>,
                      "fingerprint": {leaf: [sum, weighted, nonfinite]}, ...metadata}
  params/            an Orbax (OCDBT) checkpoint of the nested parameter dict
  codebook_usage/    optional: the stage-1 clustered codebook's usage statistics (Orbax)
The parameter tree is the NNX state of the model as a pure dict, so `nnx.replace_by_pure_dict`
puts it back into a model skeleton built with `nnx.eval_shape`.

Restoring goes against an abstract target built from the config, so shapes and dtypes are checked
before any array is read, and arrays land directly with the requested sharding.

Integrity (`fingerprints.py`): saving refuses parameters holding NaN or inf and records every
array's fingerprint in config.json; restoring recomputes them and refuses a directory whose
arrays differ from what was saved (damaged files) or hold non-finite values (directories from
older versions, which carry no fingerprint, are still checked for non-finite values).

Saving takes numpy arrays or jax Arrays of any sharding. With several processes it is collective:
every process calls it with its part of the same arrays (e.g. a trainer's FSDP-sharded params),
Orbax writes each shard once, process 0 alone clears old files and writes config.json, and a
barrier at the end lets any process read the directory next (the directory must be on storage
that every host sees). A directory written by N processes restores in any number.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from alitok_jax import errors, fingerprints, tree_util
from alitok_jax.models.variants import ARConfig, TokenizerConfig, config_from_dict
from alitok_jax.parallel.distributed import barrier
from alitok_jax.parallel.mesh import to_host

FORMAT_VERSION = 1
CONFIG_FILE = 'config.json'
PARAMS_DIR = 'params'
USAGE_DIR = 'codebook_usage'


class CheckpointError(errors.UserError, ValueError):
  """A model directory is missing, incomplete or does not match its config."""


def _abs(directory: str | os.PathLike) -> pathlib.Path:
  return pathlib.Path(directory).expanduser().resolve()


def save_model_dir(directory: str | os.PathLike, config: TokenizerConfig | ARConfig,
                   params: Mapping[str, Any], *, codebook_usage: np.ndarray | None = None,
                   metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> None:
  """Writes config.json and the Orbax params (and codebook usage) into `directory`.

  params: numpy arrays or jax Arrays (any sharding; with several processes every process passes
  the same global arrays). codebook_usage: an array, possibly replicated over processes.
  """
  directory = _abs(directory)
  primary = jax.process_index() == 0
  prints = _checked_fingerprint(directory, dict(params), codebook_usage)
  barrier('alitok_jax save_model_dir: start')  # no process may still read an old export
  if directory.exists() and any(directory.iterdir()):
    if not overwrite:
      raise CheckpointError(f'{directory} exists and is not empty (pass overwrite=True / '
                            '--overwrite to replace it)')
    if primary:
      (directory / CONFIG_FILE).unlink(missing_ok=True)  # incomplete until it is back
      for sub in (PARAMS_DIR, USAGE_DIR):
        shutil.rmtree(directory / sub, ignore_errors=True)
  if primary:
    directory.mkdir(parents=True, exist_ok=True)
  barrier('alitok_jax save_model_dir: cleared')
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(directory / PARAMS_DIR, dict(params))
  if codebook_usage is not None:
    usage = to_host(codebook_usage)
    checkpointer.save(directory / USAGE_DIR, {'usage': np.asarray(usage, np.float32)})
  checkpointer.wait_until_finished()
  # config.json last: a directory with a config is a complete one.
  if primary:
    doc = {'format': FORMAT_VERSION, 'model': config.to_dict(), **dict(metadata or {}),
           'fingerprint_format': fingerprints.FORMAT, 'fingerprint': prints}
    tmp = directory / (CONFIG_FILE + '.tmp')
    tmp.write_text(json.dumps(doc, indent=1) + '\n')
    os.replace(tmp, directory / CONFIG_FILE)
  barrier('alitok_jax save_model_dir: done')


def _checked_fingerprint(directory: pathlib.Path, params: Mapping[str, Any],
                         codebook_usage: Any) -> dict[str, list[int]]:
  """The fingerprint of what a model directory will hold; refuses NaN or inf."""
  tree = {PARAMS_DIR: params}
  if codebook_usage is not None:
    tree[USAGE_DIR] = {'usage': np.asarray(to_host(codebook_usage), np.float32)}
  prints = fingerprints.fingerprint(tree)
  bad = fingerprints.nonfinite_leaves(prints)
  if bad:
    raise CheckpointError(f'refusing to write {directory}: {sum(bad.values())} parameter values '
                          f'are NaN or inf (in {fingerprints.describe(sorted(bad))}); a model '
                          'from a diverged run is never exported')
  return prints


def _verify(directory: pathlib.Path, sub: str, tree: Mapping[str, Any]) -> None:
  """Checks restored arrays against the fingerprint config.json recorded when they were saved."""
  doc = json.loads((directory / CONFIG_FILE).read_text())
  actual = fingerprints.fingerprint({sub: dict(tree)})
  bad = fingerprints.nonfinite_leaves(actual)
  if bad:
    raise CheckpointError(f'{directory} holds {sum(bad.values())} NaN or inf parameter values '
                          f'(in {fingerprints.describe(sorted(bad))}): it comes from a diverged '
                          'run or a damaged file; export or convert a good model again')
  expected = {k: v for k, v in doc.get('fingerprint', {}).items() if k.startswith(sub + '/')}
  if not expected:
    return  # written before fingerprints existed
  differ = fingerprints.differences(expected, actual)
  if differ:
    raise CheckpointError(f'{directory}/{sub} is damaged: {len(differ)} arrays differ from what '
                          f'was saved ({fingerprints.describe(differ)}); restore the directory '
                          'from a copy, or export / convert it again')


def load_config(directory: str | os.PathLike) -> tuple[TokenizerConfig | ARConfig, dict[str, Any]]:
  """(model config, the whole config.json document) of a model directory."""
  directory = _abs(directory)
  path = directory / CONFIG_FILE
  if not directory.is_dir():
    raise CheckpointError(f'{directory} is not a directory (expected a model directory written '
                          'by `python -m alitok_jax.convert`)')
  if not path.is_file():
    raise CheckpointError(f'{directory} has no {CONFIG_FILE}: not a model directory written by '
                          '`python -m alitok_jax.convert`, or an interrupted write')
  try:
    doc = json.loads(path.read_text())
    if doc.get('format') != FORMAT_VERSION:
      raise CheckpointError(f'{path}: unsupported format {doc.get("format")!r} '
                            f'(this version reads format {FORMAT_VERSION})')
    return config_from_dict(doc['model']), doc
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise CheckpointError(f'{path} is not a valid model config: {e}') from e


def _check_against_metadata(path: pathlib.Path, abstract: Mapping[str, Any]) -> None:
  """Compares the stored tree with the expected one before reading any array."""
  try:
    stored = ocp.StandardCheckpointer().metadata(path).item_metadata.tree
  except Exception as e:  # noqa: BLE001 - unreadable metadata: a damaged or partial directory
    raise CheckpointError(f'{path} cannot be read ({type(e).__name__}: {errors.first_line(e)}): the '
                          'directory is damaged or incomplete') from e
  problem = tree_util.shape_mismatches(abstract, stored)
  if problem:
    raise CheckpointError(f'{path} does not match its config.json: {problem}')


def restore_params(directory: str | os.PathLike, abstract: Mapping[str, Any],
                   sharding: jax.sharding.Sharding | None = None) -> dict[str, Any]:
  """Restores the params of a model directory against `abstract` (a tree of ShapeDtypeStructs).

  Every array is placed with `sharding` (default: replicated on the first local device).
  """
  path = _abs(directory) / PARAMS_DIR
  if not path.is_dir():
    raise CheckpointError(f'{_abs(directory)} has no {PARAMS_DIR}/ folder')
  _check_against_metadata(path, abstract)
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                        dict(abstract))
  try:
    params = ocp.StandardCheckpointer().restore(path, target)
  except Exception as e:  # noqa: BLE001 - any failure to decode the stored arrays
    raise CheckpointError(f'{path} cannot be read ({type(e).__name__}: '
                          f'{errors.first_line(e)}): the directory is damaged or incomplete') from e
  _verify(_abs(directory), PARAMS_DIR, params)
  return params


def restore_codebook_usage(directory: str | os.PathLike) -> np.ndarray | None:
  path = _abs(directory) / USAGE_DIR
  if not path.is_dir():
    return None
  usage = {'usage': np.asarray(ocp.StandardCheckpointer().restore(path)['usage'])}
  _verify(_abs(directory), USAGE_DIR, usage)
  return usage['usage']
