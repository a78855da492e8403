"""``python -m brainssl.cli``: the ``brainssl`` command line."""

import sys

from brainssl.cli import main

sys.exit(main())
