import sys

from qroute.cli import main

sys.exit(main())
