"""`python -m alitok_jax.aot --config=... --topology=...`: the command line (commands/aot.py)."""

from alitok_jax.aot import chips

chips.quiet_libtpu()  # before anything starts JAX

from alitok_jax.commands.aot import run_main  # noqa: E402  pylint: disable=wrong-import-position

if __name__ == '__main__':
  run_main()
