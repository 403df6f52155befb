"""Ahead-of-time compilation for TPU topologies without a TPU: chip facts and topologies
(`chips`), the functions each mode runs (`programs`), memory / cost / roofline (`analysis`,
`hlo_cost`). The command line is `python -m alitok_jax.aot` (`commands/aot.py`)."""
