"""The `pretokenize` mode: a dataset -> ten-crop tokenizer codes in shards, for AR training.

    python -m alitok_jax.main --config=configs/pretokenize.py --workdir=codes/imagenet_train \
        --config.tokenizer=weights/tokenizer --config.data.kind=folder --config.data.root=...

Each image's ten crops are encoded (`train/pretokenize.py`, ALITOK_REFERENCE.md section 3) into
shards under the workdir; a rerun skips finished shards, and processes take shards round-robin.
"""

from __future__ import annotations

import ml_collections

from alitok_jax.commands import loading
from alitok_jax.train import pretokenize, train_data


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  tok = loading.tokenizer(config.tokenizer, random=config.random_tokenizer, dtype=config.dtype,
                          seed=config.seed, sizes=config)
  source = train_data.image_source(config.data, image_size=tok.config.image_size,
                                   seed=config.seed)
  return pretokenize.encode_to_shards(tok, source, workdir, num_images=config.num_images,
                                      images_per_shard=config.images_per_shard,
                                      batch_size=config.batch_size,
                                      tokenizer_name=config.tokenizer or 'random')
