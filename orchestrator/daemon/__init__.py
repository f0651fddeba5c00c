"""The daemon: the composition root and the loops that move jobs through their states."""

from __future__ import annotations

from orchestrator.daemon.app import Daemon as Daemon
