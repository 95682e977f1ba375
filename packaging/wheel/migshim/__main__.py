"""python -m migshim: the same as the console script."""
import sys

from migshim import main

sys.exit(main())
