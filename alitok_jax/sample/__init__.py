"""Sampling (library code): strategies, the guidance schedule, the jitted KV-cache scan sampler,
decoding to pixels, the sample shards on disk and the ADM npz writer. The `sample` command and
the benchmark are in `alitok_jax/commands/`."""

from alitok_jax.sample.cfg import Guidance
from alitok_jax.sample.sampler import DecodePlan, Sampler, guided_probs, sample_codes
from alitok_jax.sample.strategies import FILTERS, MinP, Sampling, Temperature, TopK, TopP

__all__ = ['DecodePlan', 'FILTERS', 'Guidance', 'MinP', 'Sampler', 'Sampling', 'Temperature',
           'TopK', 'TopP', 'guided_probs', 'sample_codes']
