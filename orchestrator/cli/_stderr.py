"""Where the CLI's logs go: a stream that follows ``sys.stderr``.

Its own module so that both the CLI entry point and the live view can use it without
importing each other.
"""

from __future__ import annotations

import sys
from typing import TextIO


class _Stderr:
    """A stream that writes to whatever ``sys.stderr`` is at each write.

    Logging keeps its stream for the life of the process; following ``sys.stderr`` keeps it
    right when stderr is swapped afterwards (test capture, a live view's redirection).
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


STDERR: TextIO = _Stderr()  # type: ignore[assignment]  # the part of TextIO logging uses
"""Where the CLI's logs go."""
