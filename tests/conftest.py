"""The project's own tests run ``attnconf check`` in one process (``ATTNCONF_JOBS=1``): pytest
already spreads the tests over the cores, and a process pool per small check would only add
start-up time. ``tests/test_cli.py`` checks ``--jobs 2`` against ``--jobs 1`` explicitly."""

import os

os.environ.setdefault("ATTNCONF_JOBS", "1")
