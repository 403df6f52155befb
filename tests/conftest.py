"""Shared test configuration: markers, the fixture directory, small helpers.

Markers (all opt-in except where the machine has what they need):
- torch: needs PyTorch; skipped where it is not installed.
- slow: minutes on a CPU; run with --runslow.
- gpu: needs an accelerator; skipped on CPU-only machines.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / 'shared' / 'fixtures'


def pytest_addoption(parser):
  parser.addoption('--runslow', action='store_true', help='also run tests marked slow')


def pytest_configure(config):
  config.addinivalue_line('markers', 'torch: needs PyTorch installed (skipped without it)')
  config.addinivalue_line('markers', 'slow: takes minutes on a CPU (run with --runslow)')
  config.addinivalue_line('markers', 'gpu: needs a GPU or TPU (skipped on CPU-only machines)')


def pytest_collection_modifyitems(config, items):
  import jax  # noqa: PLC0415

  has_accelerator = jax.default_backend() != 'cpu'
  for item in items:
    if 'slow' in item.keywords and not config.getoption('--runslow'):
      item.add_marker(pytest.mark.skip(reason='slow: run with --runslow'))
    if 'gpu' in item.keywords and not has_accelerator:
      item.add_marker(pytest.mark.skip(reason='needs a GPU or TPU'))


@pytest.fixture(scope='session')
def fixtures_dir() -> pathlib.Path:
  if not FIXTURES.is_dir():
    pytest.skip(f'parity fixtures not found at {FIXTURES} (they live in ../shared/fixtures)')
  return FIXTURES


def load_io(name: str) -> dict[str, np.ndarray]:
  """The inputs and outputs of a fixture, as a dict of numpy arrays."""
  with np.load(FIXTURES / f'{name}_io.npz') as f:
    return dict(f)


def tool_module(name: str):
  """The script tools/<name>.py as a module (the fixture makers: their inputs, their outputs)."""
  import importlib.util  # noqa: PLC0415
  spec = importlib.util.spec_from_file_location(name, REPO / 'tools' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


# Heads of the tiny fixture tokenizers (not derivable from weight shapes).
FIXTURE_HEADS = {'encoder_heads': 4, 'decoder_heads': 4}


@pytest.fixture(scope='session')
def model_dirs(fixtures_dir, tmp_path_factory) -> dict[str, pathlib.Path]:
  """Every fixture converted once into a model directory: {'ar', 'tokenizer', 'tokenizer_stage1'}."""
  from alitok_jax.convert.run import torch_to_model_dir  # noqa: PLC0415

  root = tmp_path_factory.mktemp('model_dirs')
  out = {}
  for name in ('ar', 'tokenizer', 'tokenizer_stage1'):
    heads = {} if name == 'ar' else FIXTURE_HEADS
    torch_to_model_dir(fixtures_dir / f'{name}.pth', root / name, **heads)
    out[name] = root / name
  return out
