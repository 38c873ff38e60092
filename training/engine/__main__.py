import sys

from training.engine.cli import main

sys.exit(main())
