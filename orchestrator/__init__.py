"""orchestrator: drives LLM providers' Batch APIs so nobody has to babysit a batch job."""

from __future__ import annotations

__version__ = "0.1.0"
