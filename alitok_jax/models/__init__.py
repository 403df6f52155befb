"""Flax NNX modules of AliTok (no training logic): the tokenizer, the AR model and their parts.

`variants` holds every size; `build` makes models (random, abstract, or from parameters).
"""
