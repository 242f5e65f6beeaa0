"""``python -m engine.cli``: the ``cairn`` command."""

import sys

from engine.cli.main import main

sys.exit(main())
