"""`python -m training ...` (and `torchrun -m training train ...`): the cargoscan CLI."""

import sys

from cargoscan.cli import main

sys.exit(main())
