"""`python -m isoflop.cli`: the same as the `isoflop` command."""

import sys

from isoflop.cli import main

sys.exit(main())
