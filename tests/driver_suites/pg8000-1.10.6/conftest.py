# Not upstream: migshim's (tests/driver_suites/README.md).  pg8000 1.10.6's
# tests live inside the package (pg8000/tests, imported as
# pg8000.tests.connection_settings); Debian's python3-pg8000 ships the package
# without them.  Make the installed package's pg8000.tests this directory's,
# so the tests run against the installed driver, unmodified.
import os

import pg8000

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg8000")
if here not in pg8000.__path__:
    pg8000.__path__.append(here)
