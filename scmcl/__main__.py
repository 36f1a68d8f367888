import sys

from scmcl.cli import main

sys.exit(main())
