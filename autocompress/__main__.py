"""`python -m autocompress` runs the command line."""

import sys

from autocompress.cli import main

sys.exit(main())
