"""``python -m artforge`` (and ``torchrun -m artforge``) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
