"""``python -m xvit`` (and ``torchrun -m xvit train ...``) runs the command line."""

import sys

from xvit.cli import main

sys.exit(main())
