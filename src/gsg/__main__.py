import sys

from gsg.cli import main

sys.exit(main())
