"""``python -m adapterpool.cli`` (as ``accelerate launch -m adapterpool.cli`` runs it)."""

import sys

from .main import main

sys.exit(main())
