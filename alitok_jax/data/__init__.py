"""Image data for training and evaluation, with grain.

Modules (import them directly; `pipeline` pulls in grain, the others are light):
  image_io      decode bytes to RGB, the ADM centre crop, reading a folder for evaluation
  transforms    per-example transforms of the reference: resize + random crop + flip, ten-crop
  synthetic     a built-in class-conditional synthetic set and its checker `classify`
  folders       ImageNet-style class folders as a grain data source
  tfds_source   TFDS `imagenet2012` (array_record) as a grain data source
  pipeline      `image_loader` / `make_source`: per-process, checkpointable batch iterators
  code_shards   pretokenized codes: `write_shard`, `CodeShards`, `code_loader`
"""
