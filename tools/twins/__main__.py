"""`python -m tools.twins` (run from the repo root): see `tools.twins.cli`."""

import sys

from tools.twins.cli import main

sys.exit(main())
