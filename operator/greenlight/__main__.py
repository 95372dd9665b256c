import sys

from greenlight.cli import main

sys.exit(main())
