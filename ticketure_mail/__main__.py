"""Allows ``python -m ticketure_mail``."""

import sys

from .cli import main

sys.exit(main())
