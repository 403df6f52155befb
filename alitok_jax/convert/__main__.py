"""`python -m alitok_jax.convert SRC DST`: the converter's command line (commands/convert.py)."""

import sys

from alitok_jax.commands.convert import main

if __name__ == '__main__':
  sys.exit(main())
