"""Flax NNX modules of AliTok (no training logic): the tokenizer, the AR model and their parts.

`variants` holds every size (and the released sampling settings); `build` makes models (random,
abstract, or from parameters); `functional` runs them as pure jitted functions of
(graphdef, params).
"""
