"""PyTorch checkpoints <-> model directories: `python -m alitok_jax.convert SRC DST`.

`torch_format` reads and writes `torch.save` files without PyTorch, `detect` tells the model
kind and sizes from a state dict, `keys` maps names and layouts, `run` ties them together.
"""
