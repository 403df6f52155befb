"""Loads a config file of `configs/` by name, as `--config=configs/<name>.py:<variant>` would.

For code that builds one mode's config inside another (the demo) and for tests.
"""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs'


def load(name: str, variant: str | None = None) -> ml_collections.ConfigDict:
  """get_config(variant) of configs/<name>.py."""
  path = CONFIGS / f'{name}.py'
  if not path.is_file():
    raise FileNotFoundError(f'no config file {path}')
  spec = importlib.util.spec_from_file_location(f'configs_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)
