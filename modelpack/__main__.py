"""``python -m modelpack`` is the ``modelpack`` command."""

import sys

from .cli import main

sys.exit(main())
