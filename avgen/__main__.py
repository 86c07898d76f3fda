import sys

from avgen.cli import main

sys.exit(main())
