"""``python -m vlkit ...``: the ``vlkit`` command (as ``python -m vlkit.cli ...``)."""

import sys

from .cli import main

sys.exit(main())
