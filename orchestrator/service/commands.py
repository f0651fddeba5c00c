"""What the service may ask a running daemon to do: submit a job, cancel a job.

The view (:mod:`orchestrator.service.view`) only reads; these are the two writes of the JSON
API. The daemon implements :class:`JobCommands` (:mod:`orchestrator.daemon.commands`) with the
very code ``orchestrator submit`` and ``orchestrator cancel`` run, so an HTTP client gets the
same validation and the same messages as a shell.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from orchestrator.config import InputOrigin
    from orchestrator.model import Job, JobSpec


class CommandRefused(Exception):
    """A command the daemon refused: ``status`` is the HTTP status that says why.

    ``error`` is one readable line; ``problems`` lists ``file:line: what`` entries when the
    inputs were invalid (as ``orchestrator submit`` prints them).
    """

    def __init__(self, status: int, error: str, problems: Sequence[str] = ()) -> None:
        self.status = status
        self.error = error
        self.problems = tuple(problems)
        super().__init__(error)


@attrs.frozen(kw_only=True)
class Cancelled:
    """The outcome of a cancel request."""

    job: Job
    """The job after the request."""
    already_requested: bool
    """The job was flagged before this request."""
    message: str
    """What happens next, as ``orchestrator cancel`` says it."""


class JobCommands(Protocol):
    """The writes of the JSON API, as the daemon carries them out."""

    async def submit(self, spec: JobSpec, origins: Sequence[InputOrigin]) -> tuple[Job, bool]:
        """Validate ``spec``'s inputs and record it, exactly as ``orchestrator submit`` does.

        Returns:
            ``(job, created)``; ``created`` is False when the name already holds this
            definition (a no-op).

        Raises:
            CommandRefused: invalid inputs (422, with every bad line), a name the config or
                the ledger holds with another definition (409), a file that cannot be
                written (500).
        """
        ...

    async def cancel(self, name: str) -> Cancelled:
        """Flag the job named ``name`` for cancellation and wake the loops that act on it.

        Raises:
            JobNotFound: no such job.
        """
        ...
