"""``python -m vlkit.cli ...`` (and ``torchrun -m vlkit.cli train ...``)."""

import sys

from . import main

sys.exit(main())
