"""`python -m training ...` (and `torchrun -m training train ...`): the cargoscan CLI."""

import sys

from inference.cli import main

sys.exit(main())
