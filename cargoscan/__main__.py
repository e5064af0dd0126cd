"""`python -m cargoscan ...`: the same command line as the `cargoscan` script."""

import sys

from cargoscan.cli import main

sys.exit(main())
