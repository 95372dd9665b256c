"""``python -m greenlight.devcluster``: see :mod:`greenlight.devcluster.commands`."""

import sys

from greenlight.devcluster.commands import main

sys.exit(main())
