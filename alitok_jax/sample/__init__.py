"""Sampling: strategies, the guidance schedule, the jitted KV-cache scan sampler, decoding to
pixels, the `sample` command and the throughput benchmark."""

from alitok_jax.sample.cfg import Guidance
from alitok_jax.sample.sampler import DecodePlan, Sampler, guided_probs, sample_codes
from alitok_jax.sample.strategies import Sampling, Temperature, TopK, TopP

__all__ = ['DecodePlan', 'Guidance', 'Sampler', 'Sampling', 'Temperature', 'TopK', 'TopP',
           'guided_probs', 'sample_codes']
