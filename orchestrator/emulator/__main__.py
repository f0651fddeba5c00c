"""``python -m orchestrator.emulator``: the ``emulate`` subcommand on its own."""

from __future__ import annotations

import argparse
import sys

from orchestrator.emulator.server import add_arguments, run
from orchestrator.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Parse the ``emulate`` options and serve; 2 on a configuration error."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.emulator",
        description="Serve an emulated Mistral Files + Batch API.",
    )
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
