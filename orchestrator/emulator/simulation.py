"""The timeline of one emulated batch job: a pure function of the clock.

Nothing runs in the background. Each request reads the clock and asks :func:`phase_at` where
every job it touches stands at that instant, so a test that moves a ``FakeClock`` sees exactly
the state the arithmetic says, and a restarted process carries on where the old one was.

In simulated seconds ``s`` since creation (``s = (now - created_at) * time_scale``)::

    0 ........ V ............................ E ........ E+F ..... T
    VALIDATING RUNNING (throughput req/s)     FINALIZING SUCCEEDED / FAILED
    (total 0)                                            (or EXPIRED at T if E > T)

``V`` is the validation delay, ``E = V + n / throughput`` the natural end, ``F`` the
finalizing delay (0 for a wire without such a status, Mistral: then there is no FINALIZING),
``T`` the timeout.
A cancel at ``sc`` freezes progress and gives ``CANCELLING`` until ``sc + cancel_seconds``, then
``CANCELLED``. An unusable input (empty, or every line invalid) fails at ``V`` (an input
refused as a whole, with ``failed_total`` 0, reports no line processed); a job whose every line
failed ends ``FAILED`` too (its ``total`` is then non-zero and it has no job-level
errors, which is how a wire that calls it otherwise, such as OpenAI's ``completed``, tells).

The states are the simulation's own, not any vendor's: each wire maps them onto its statuses
(Mistral: ``QUEUED``, ``RUNNING``, ``SUCCESS``, ...), so one timeline serves every dialect.
"""

from __future__ import annotations

import math
from enum import StrEnum

import attrs


class State(StrEnum):
    """Where a simulated job stands, whatever wire reports it."""

    VALIDATING = "validating"
    """Created, its input not yet validated (reports no total)."""
    RUNNING = "running"
    FINALIZING = "finalizing"
    """Every line processed, the results being prepared (only with ``finalizing_seconds``)."""
    SUCCEEDED = "succeeded"
    """Every line processed, at least one succeeded."""
    FAILED = "failed"
    """The input was unusable, or every line failed."""
    EXPIRED = "expired"
    """The timeout came first; what was processed by then is kept."""
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL: frozenset[State] = frozenset(
    {State.SUCCEEDED, State.FAILED, State.EXPIRED, State.CANCELLED}
)

ENQUEUED: frozenset[State] = frozenset({State.VALIDATING, State.RUNNING, State.FINALIZING})
"""The states whose prompt tokens count against an enqueued-token limit."""

# Float products such as 0.3 * 10 land a hair below the integer; never lose a request to it.
_EPSILON = 1e-9


@attrs.frozen(kw_only=True)
class SimParams:
    """The simulation knobs a job was created with (stored with the job)."""

    time_scale: float
    throughput: float
    validation_seconds: float
    cancel_seconds: float
    failure_fraction: float
    seed: int
    finalizing_seconds: float = 0.0
    """Simulated seconds in FINALIZING after the last line (0: none; jobs stored before the
    field existed have none)."""
    transient_fraction: float = 0.0
    """Share of valid lines that fail transiently on a run (drawn per custom_id and run)."""


@attrs.frozen(kw_only=True)
class Timeline:
    """What the timeline of a job depends on, besides the validation outcome."""

    created_at: float
    """Clock seconds at creation."""
    requests: int
    """Number of request lines (blank lines excluded), known from the upload."""
    timeout_hours: int
    params: SimParams
    cancel_at: float | None = None
    """Clock seconds when a cancel was accepted."""


@attrs.frozen(kw_only=True)
class Validation:
    """The outcome of validating the input lines (known once the validation delay passed)."""

    usable: bool
    """False when the input is empty or every line is invalid."""
    failed_total: int
    """How many lines fail (invalid lines plus simulated failures) if all are processed. With
    ``usable`` false, 0 means the input was refused as a whole and no line is processed."""


@attrs.frozen(kw_only=True)
class Phase:
    """Where a job stands at one instant."""

    state: State
    total: int
    """The request count as reported (0 until validation ends)."""
    processed: int
    """Lines processed so far, in input order."""
    started: bool
    """Whether validation has ended (a start time is reported)."""
    terminal_at: float | None
    """Simulated seconds after creation at which the job became terminal, if it is."""
    needs_validation: bool = False
    """The answer depends on the validation outcome, which the caller must supply."""

    @property
    def terminal(self) -> bool:
        """Whether the state is final."""
        return self.state in TERMINAL


def _processed_at(tl: Timeline, s: float) -> int:
    """Lines processed by simulated second ``s`` if nothing stops the job."""
    p = tl.params
    if s < p.validation_seconds:
        return 0
    return min(tl.requests, math.floor((s - p.validation_seconds) * p.throughput + _EPSILON))


def sim_seconds(tl: Timeline, clock_seconds: float) -> float:
    """Simulated seconds elapsed since creation at clock time ``clock_seconds``."""
    return max(0.0, (clock_seconds - tl.created_at) * tl.params.time_scale)


def clock_at(tl: Timeline, sim: float) -> float:
    """Clock time at which ``sim`` simulated seconds after creation are reached."""
    return tl.created_at + sim / tl.params.time_scale


def phase_at(tl: Timeline, now: float, validation: Validation | None) -> Phase:
    """Where the job stands at clock time ``now``.

    Args:
        tl: the job's timeline.
        now: the clock time of the question.
        validation: the validation outcome, or ``None`` if it is not known yet. When the
            answer depends on it, the result has ``needs_validation=True`` and the caller
            must validate and ask again.

    Returns:
        The phase; ``processed`` lines are the first ones in input order.
    """
    p = tl.params
    s = sim_seconds(tl, now)
    v = p.validation_seconds
    t = tl.timeout_hours * 3600.0
    if tl.cancel_at is not None:
        sc = sim_seconds(tl, tl.cancel_at)
        started = sc >= v
        if started and validation is None:
            return _unknown(started=True)
        done = sc + p.cancel_seconds
        return Phase(
            state=State.CANCELLED if s >= done else State.CANCELLING,
            total=tl.requests if started else 0,
            processed=_processed_at(tl, sc),
            started=started,
            terminal_at=done if s >= done else None,
        )
    if v >= t:
        # A validation delay longer than the timeout: the job never starts.
        if s < t:
            return Phase(
                state=State.VALIDATING, total=0, processed=0, started=False, terminal_at=None
            )
        return Phase(state=State.EXPIRED, total=0, processed=0, started=False, terminal_at=t)
    if s < v:
        return Phase(state=State.VALIDATING, total=0, processed=0, started=False, terminal_at=None)
    if validation is None:
        return _unknown(started=True)
    n = tl.requests
    if not validation.usable:
        judged = n if validation.failed_total else 0
        return Phase(
            state=State.FAILED, total=judged, processed=judged, started=True, terminal_at=v
        )
    end = v + n / p.throughput
    if end <= t:
        done = end + p.finalizing_seconds
        if s >= done:
            state = State.FAILED if validation.failed_total >= n else State.SUCCEEDED
            return Phase(state=state, total=n, processed=n, started=True, terminal_at=done)
        if s >= end:
            return Phase(
                state=State.FINALIZING, total=n, processed=n, started=True, terminal_at=None
            )
    elif s >= t:
        return Phase(
            state=State.EXPIRED,
            total=n,
            processed=_processed_at(tl, t),
            started=True,
            terminal_at=t,
        )
    return Phase(
        state=State.RUNNING, total=n, processed=_processed_at(tl, s), started=True, terminal_at=None
    )


def _unknown(*, started: bool) -> Phase:
    return Phase(
        state=State.RUNNING,
        total=0,
        processed=0,
        started=started,
        terminal_at=None,
        needs_validation=True,
    )


def pending_at(tl: Timeline, now: float, validation: Validation | None) -> int:
    """Requests still to be processed at ``now``: what counts against the workspace budget.

    While validating (or when the validation outcome is unknown) this is the job's line count
    minus what has been processed, as if the input were usable; a terminal job has none.
    """
    phase = phase_at(tl, now, validation)
    if phase.needs_validation:
        phase = phase_at(tl, now, Validation(usable=True, failed_total=0))
    if phase.terminal:
        return 0
    return tl.requests - phase.processed


def running_from(tl: Timeline) -> float:
    """Clock time at which validation ends and the lines start being processed."""
    return clock_at(tl, tl.params.validation_seconds)


def finalizing_from(tl: Timeline) -> float:
    """Clock time at which the last line is processed (FINALIZING begins, if there is one)."""
    p = tl.params
    return clock_at(tl, p.validation_seconds + tl.requests / p.throughput)


def enqueued_at(tl: Timeline, now: float, validation: Validation | None) -> bool:
    """Whether the job's prompt tokens count as enqueued at ``now``.

    They do while it is validating, running or finalizing (not while cancelling), unless its
    input is already known to be refused; an unknown validation counts as usable.
    """
    if validation is not None and not validation.usable:
        return False
    phase = phase_at(tl, now, validation or Validation(usable=True, failed_total=0))
    return phase.state in ENQUEUED


def line_finished_at(tl: Timeline, index: int) -> float:
    """Clock time at which line ``index`` (0-based) was processed."""
    p = tl.params
    return clock_at(tl, p.validation_seconds + (index + 1) / p.throughput)
