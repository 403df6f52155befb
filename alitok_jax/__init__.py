"""alitok_jax: AliTok (arXiv 2506.05289) in JAX / Flax NNX.

An image tokenizer whose bidirectional encoder is trained against a causal decoder, and the
class-conditional AR models that generate its 273 codes. See README.md.

The public API is `Tokenizer` and `Generator` (`alitok_jax/api.py`), imported on first use so
that the light modules (configs' `config_args`, the data sources) load without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  from alitok_jax.api import Generator, Tokenizer

__all__ = ['Generator', 'Tokenizer']
__version__ = '0.1.0'


def __getattr__(name: str) -> Any:
  if name in __all__:
    from alitok_jax import api  # pylint: disable=import-outside-toplevel
    return getattr(api, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
