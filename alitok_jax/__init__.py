"""alitok_jax: AliTok (arXiv 2506.05289) in JAX / Flax NNX.

An image tokenizer whose bidirectional encoder is trained against a causal decoder, and the
class-conditional AR models that generate its 273 codes. See README.md.
"""

from alitok_jax.api import Generator, Tokenizer

__all__ = ['Generator', 'Tokenizer']
__version__ = '0.1.0'
