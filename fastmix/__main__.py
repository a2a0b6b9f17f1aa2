"""``python -m fastmix ...`` is the ``fastmix`` command (see :mod:`fastmix.cli`)."""
import sys

from .cli import main

sys.exit(main())
