"""Line retries (issue #14): which result lines are worth another attempt, when, and how a
job ends once its attempts are merged. Pure: no I/O, no clock reads.

A dialect says what one of its result lines means through :class:`ResultLines` (the provider
supplies it: ``Provider.result_lines``); everything else here is the same for every dialect.
``docs/retries.md`` has the table of what is retried for each dialect.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import attrs

from orchestrator.model import Outcome

MAX_ATTEMPTS_LIMIT = 20
"""The most remote attempts ``max_attempts`` may allow (the config refuses more)."""

RETRY_DELAY_CAP = 6 * 3600.0
"""The longest wait between two attempts, whatever ``retry_delay`` and the attempt number."""


class Verdict(StrEnum):
    """What one result line says about its request."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"
    """Failed for a reason that passes (or never ran): worth another attempt."""
    FINAL = "final"
    """Failed for a reason another attempt would not change (the request itself is wrong)."""


class Reason(StrEnum):
    """Why a line is retried (the metrics count retried lines by these)."""

    RATE_LIMITED = "rate_limited"
    """HTTP 429 on the line."""
    SERVER_ERROR = "server_error"
    """HTTP 5xx on the line."""
    TRANSIENT = "transient"
    """A transient error code of the provider's own (see the dialect's table)."""
    NOT_PROCESSED = "not_processed"
    """The remote job ended (expired) before it ran the line."""
    JOB_FAILED = "job_failed"
    """The remote job failed before it processed any line, for a reason that may pass."""


@attrs.frozen(kw_only=True)
class LineResult:
    """One result line read: whose it is, and what it says."""

    custom_id: str | None
    """None when the line names no custom_id (it cannot be matched to a request)."""
    verdict: Verdict
    reason: Reason | None = None
    """Set for :attr:`Verdict.RETRY`."""


def status_verdict(status_code: int) -> tuple[Verdict, Reason | None]:
    """What a line's HTTP status says: 2xx succeeded; 429 and 5xx retried; the rest final."""
    if 200 <= status_code < 300:
        return Verdict.SUCCEEDED, None
    if status_code == 429:
        return Verdict.RETRY, Reason.RATE_LIMITED
    if 500 <= status_code < 600:
        return Verdict.RETRY, Reason.SERVER_ERROR
    return Verdict.FINAL, None


class ResultLines(abc.ABC):
    """How a dialect's result lines read: the hook a provider supplies for retries."""

    @abc.abstractmethod
    def classify(self, record: object) -> LineResult:
        """What one parsed result line (output or error file) says."""

    def retries_job_failure(self, error_codes: Sequence[str]) -> bool:
        """Whether a remote job that failed before processing any line is worth resubmitting
        whole, given its job-level error codes. The default: only a failure that names no
        code (a provider-side fault); a named code is the input's fault (validation)."""
        return not error_codes

    def never_ran(self, custom_id: str, message: str) -> dict[str, Any]:
        """The error line written for a request no attempt ran (dialect-neutral by default:
        ``{custom_id, response: null, error: {code: "not_processed", message}}``)."""
        return {
            "custom_id": custom_id,
            "response": None,
            "error": {"code": "not_processed", "message": message},
        }


def _status(response: object) -> int | None:
    if isinstance(response, Mapping):
        code = response.get("status_code")
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    return None


def _custom_id(record: Mapping[str, Any]) -> str | None:
    value = record.get("custom_id")
    return value if isinstance(value, str) and value else None


class HttpStatusLines(ResultLines):
    """Lines shaped ``{custom_id, response: {status_code, body} | null, error: {code} | null}``
    (Mistral and OpenAI): the status decides; without one, the error's code does.

    ``transient_codes`` are error codes retried as :attr:`Reason.TRANSIENT`,
    ``not_processed_codes`` those of a request that never ran; any other code is final.
    """

    def __init__(
        self, *, transient_codes: frozenset[str], not_processed_codes: frozenset[str]
    ) -> None:
        self.transient_codes = transient_codes
        self.not_processed_codes = not_processed_codes

    def classify(self, record: object) -> LineResult:
        if not isinstance(record, Mapping):
            return LineResult(custom_id=None, verdict=Verdict.FINAL)
        custom_id = _custom_id(record)
        response = record.get("response")
        status = _status(response)
        error = record.get("error")
        code = error.get("code") if isinstance(error, Mapping) else None
        if status is None and isinstance(response, Mapping):
            status = _status({"status_code": response.get("raw_status_code")})
        if isinstance(error, Mapping) and status is None:
            raw = error.get("raw_status_code")
            status = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
        if code is None and isinstance(response, Mapping):
            body = response.get("body")
            if isinstance(body, Mapping):
                inner = body.get("error")
                code = (inner if isinstance(inner, Mapping) else body).get("code")
        code = str(code) if code is not None else None
        if code in self.not_processed_codes:
            return LineResult(
                custom_id=custom_id, verdict=Verdict.RETRY, reason=Reason.NOT_PROCESSED
            )
        if status is not None:
            verdict, reason = status_verdict(status)
            if verdict is Verdict.SUCCEEDED and error not in (None, {}):
                verdict = Verdict.FINAL  # a 2xx with an error object is not a success
            if verdict is Verdict.FINAL and code in self.transient_codes:
                return LineResult(
                    custom_id=custom_id, verdict=Verdict.RETRY, reason=Reason.TRANSIENT
                )
            return LineResult(custom_id=custom_id, verdict=verdict, reason=reason)
        if code in self.transient_codes:
            return LineResult(custom_id=custom_id, verdict=Verdict.RETRY, reason=Reason.TRANSIENT)
        return LineResult(custom_id=custom_id, verdict=Verdict.FINAL)


def next_attempt_delay(base: float, attempt: int) -> float:
    """Seconds to wait before creating attempt ``attempt`` (2, 3, ...): ``base`` before the
    second, doubling for each later one, at most :data:`RETRY_DELAY_CAP`."""
    return float(min(RETRY_DELAY_CAP, base * 2 ** max(0, attempt - 2)))


def wants_another_attempt(
    *, attempt: int, max_attempts: int, cancelled: bool, retryable: int
) -> bool:
    """Whether attempt ``attempt + 1`` is made: lines to retry, attempts left, no cancel."""
    return not cancelled and retryable > 0 and attempt < max_attempts


def never_processed_reason(
    outcome: Outcome | None, *, completed: int, job_failure_retryable: bool
) -> Reason | None:
    """Why the lines an attempt's remote job never reached are retried (None: they are not).

    Expired: every line it did not reach. Failed having processed nothing, for a reason that
    may pass: every line. Cancelled: none (the user stopped the job). A job that succeeded
    but left a line out is treated like one that expired for that line.
    """
    if outcome is Outcome.CANCELLED:
        return None
    if outcome is Outcome.FAILED:
        return Reason.JOB_FAILED if completed == 0 and job_failure_retryable else None
    return Reason.NOT_PROCESSED


def merged_outcome(
    *, succeeded: int, failed: int, last: Outcome | None, cancelled: bool
) -> Outcome:
    """The outcome of a job whose attempts are merged, from the merged counts.

    Every line succeeded in some attempt: ``succeeded``. Otherwise the user's cancel, then
    an expiry of the last attempt, say so; none succeeded: ``failed``; else ``partial``.
    """
    if failed == 0:
        return Outcome.SUCCEEDED
    if cancelled or last is Outcome.CANCELLED:
        return Outcome.CANCELLED
    if last is Outcome.EXPIRED:
        return Outcome.EXPIRED
    if succeeded == 0:
        return Outcome.FAILED
    return Outcome.PARTIAL


ATTEMPT_SEPARATOR = "/attempt-"
"""Joins a job's name and an attempt's number: ``survey/attempt-02``."""


def attempt_name(job: str, number: int) -> str:
    """The name of attempt ``number`` (2, 3, ...) of the job named ``job``."""
    return f"{job}{ATTEMPT_SEPARATOR}{number:02d}"


def split_attempt_name(name: str) -> tuple[str, int] | None:
    """``(job name, attempt number)`` of an attempt's name, or None for any other name."""
    job, sep, number = name.rpartition(ATTEMPT_SEPARATOR)
    if not sep or not job or not number.isdigit():
        return None
    return job, int(number)
