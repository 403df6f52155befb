"""Data for training and evaluation, with grain.

Modules (import them directly; `loader` and `image_pipeline` pull in grain, the others are light):
  sources         the one registry of data sources: `make_source(kind, **arguments)`
  loader          the generic grain loader: one global stream, per-process shards, checkpoints
  image_pipeline  images as batches: read, decode, transform (`image_loader`)
  image_io        decode bytes to RGB, the ADM centre crop, reading a folder for evaluation
  transforms      per-example transforms of the reference: resize + random crop + flip, ten-crop
  synthetic       built-in synthetic images and code sequences
  synthetic_checkers  which class a synthetic image shows: `shape_class` (colour-blind),
                  `colour_class` (by its colours mostly)
  folders         ImageNet-style class folders as a grain data source
  tfds_source     TFDS `imagenet2012` (array_record) as a grain data source
  code_shards     pretokenized codes: `write_shard`, `CodeShards`, `code_loader`
  npy_files       .npy arrays opened with the header's size checked first (code shards, npz batches)
"""
