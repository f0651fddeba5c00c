"""``python -m orchestrator``: the same entry point as the ``orchestrator`` script."""

from __future__ import annotations

import sys

from orchestrator.cli import main

sys.exit(main())
