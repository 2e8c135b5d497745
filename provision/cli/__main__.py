"""`python -m provision.cli`: the console script `provision`."""

import sys

from provision.cli.main import main

sys.exit(main())
