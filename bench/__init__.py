"""Benchmarks: the daemon against the naive polling loop and against the machine's limits.

Each harness is one command (``python -m bench.<name>``) that prints a Markdown report and can
write its figures as JSON (``--json PATH``). None of them runs in ``make test``; the smoke tests
in ``tests/bench`` run each one at a toy size. Results live in ``docs/benchmarks.md``.
"""

from __future__ import annotations
