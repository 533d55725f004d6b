"""``python -m ecd_cli`` runs the ``ecd`` command."""

import sys

from ecd_cli.main import main

sys.exit(main())
