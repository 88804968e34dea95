import sys

from loupe.engine.cli import main

sys.exit(main())
