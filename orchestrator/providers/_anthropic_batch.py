"""Anthropic's ``MessageBatch`` read into the port's :class:`RemoteJob`, and the create intent.

Split from :mod:`orchestrator.providers.anthropic` (the HTTP calls): pure functions of the JSON
the API answers (``shared/api/anthropic-batches.md`` §2).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from orchestrator.errors import PermanentProviderError
from orchestrator.model import RemotePhase
from orchestrator.providers._transport import expect_object, int_field, malformed, optional_str
from orchestrator.providers.base import RemoteJob
from orchestrator.retries import LineResult, Reason, ResultLines, Verdict

INTENT_PREFIX = "inline"
COUNT_KEYS = ("processing", "succeeded", "errored", "canceled", "expired")


@attrs.frozen(kw_only=True)
class Intent:
    """What :meth:`AnthropicProvider.upload_input` measured: the create body to be sent."""

    requests: int
    bytes: int
    """Bytes of the request items (the body less its ``{"requests":[`` … ``]}`` frame)."""
    sha256: str
    custom_ids_sha256: str

    def file_id(self) -> str:
        return (
            f"{INTENT_PREFIX}:{self.requests}:{self.bytes}:{self.sha256}:{self.custom_ids_sha256}"
        )

    @classmethod
    def parse(cls, file_id: str) -> Intent | None:
        """The intent a file id spells, or None (not one of ours)."""
        parts = file_id.split(":")
        if len(parts) != 5 or parts[0] != INTENT_PREFIX:
            return None
        try:
            return cls(
                requests=int(parts[1]),
                bytes=int(parts[2]),
                sha256=parts[3],
                custom_ids_sha256=parts[4],
            )
        except ValueError:
            return None


def _malformed(operation: str, what: str) -> PermanentProviderError:
    return malformed("anthropic", operation, what)


def _timestamp(value: object, *, operation: str, field: str) -> int | None:
    """Epoch seconds of an RFC 3339 time (``None`` stays ``None``)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _malformed(operation, f"{field} is not an RFC 3339 string: {value!r}"[:200])
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise _malformed(operation, f"{field} is not an RFC 3339 time: {value!r}"[:200]) from None


def ended_phase(counts: Mapping[str, int], *, cancelled: bool) -> RemotePhase:
    """How an ``ended`` batch ended, from its final counts."""
    if cancelled:
        return RemotePhase.CANCELLED
    if counts["expired"]:
        return RemotePhase.EXPIRED
    if counts["succeeded"] == 0 and sum(counts.values()) > 0:
        return RemotePhase.FAILED
    return RemotePhase.SUCCEEDED


def parse_job(data: object, *, operation: str = "get_job") -> RemoteJob:
    """A :class:`RemoteJob` from a ``MessageBatch`` JSON object.

    Raises:
        PermanentProviderError: a required field is missing or of the wrong type, or the
            ``processing_status`` is unknown.
    """
    data = expect_object(data, "a message batch", provider="anthropic", operation=operation)
    job_id, status = data.get("id"), data.get("processing_status")
    if not isinstance(job_id, str) or not job_id:
        raise _malformed(operation, f"message batch without an id: {str(data)[:200]}")
    raw = data.get("request_counts")
    if not isinstance(raw, Mapping):
        raise _malformed(operation, f"message batch {job_id} has no request_counts object")
    counts = {
        key: int_field(raw, key, provider="anthropic", operation=f"{operation} request_counts")
        for key in COUNT_KEYS
    }
    cancelled = data.get("cancel_initiated_at") is not None
    if status == "in_progress":
        phase = RemotePhase.RUNNING
    elif status == "canceling":
        phase = RemotePhase.CANCELLING
    elif status == "ended":
        phase = ended_phase(counts, cancelled=cancelled)
    else:
        raise PermanentProviderError(
            f"anthropic message batch {job_id} has unknown processing_status {status!r} "
            "(known: in_progress, canceling, ended); the API changed: upgrade the orchestrator"
        )
    failed = counts["errored"] + counts["canceled"] + counts["expired"]
    results_url = optional_str(data.get("results_url")) if phase.terminal else None
    created = _timestamp(data.get("created_at"), operation=operation, field="created_at")
    return RemoteJob(
        id=job_id,
        status=status,
        phase=phase,
        total=sum(counts.values()),
        completed=counts["succeeded"] + failed,
        succeeded=counts["succeeded"],
        failed=failed,
        output_file=results_url if results_url and counts["succeeded"] else None,
        error_file=results_url if results_url and failed else None,
        created_at=created or 0,
        completed_at=_timestamp(data.get("ended_at"), operation=operation, field="ended_at"),
    )


_RETRIED_ERRORS: Mapping[str, Reason] = {
    "rate_limit_error": Reason.RATE_LIMITED,
    "api_error": Reason.SERVER_ERROR,
    "overloaded_error": Reason.SERVER_ERROR,
    "timeout_error": Reason.TRANSIENT,
}
"""Errored results worth another attempt: the Batch guide says only ``invalid_request_error``
"must be fixed before re-sending"; server-side types "can be retried directly"."""


class AnthropicResultLines(ResultLines):
    """``{custom_id, result: {type, ...}}`` lines: succeeded; errored (retried unless the
    request itself is invalid); expired (never ran: retried); canceled (final: a cancel)."""

    def classify(self, record: object) -> LineResult:
        if not isinstance(record, Mapping):
            return LineResult(custom_id=None, verdict=Verdict.FINAL)
        custom_id = record.get("custom_id")
        custom_id = custom_id if isinstance(custom_id, str) and custom_id else None
        result = record.get("result")
        kind = result.get("type") if isinstance(result, Mapping) else None
        if kind == "succeeded":
            return LineResult(custom_id=custom_id, verdict=Verdict.SUCCEEDED)
        if kind == "expired":
            return LineResult(
                custom_id=custom_id, verdict=Verdict.RETRY, reason=Reason.NOT_PROCESSED
            )
        if kind == "errored" and isinstance(result, Mapping):
            outer = result.get("error")
            inner = outer.get("error") if isinstance(outer, Mapping) else None
            error_type = inner.get("type") if isinstance(inner, Mapping) else None
            reason = _RETRIED_ERRORS.get(str(error_type))
            if reason is not None:
                return LineResult(custom_id=custom_id, verdict=Verdict.RETRY, reason=reason)
        return LineResult(custom_id=custom_id, verdict=Verdict.FINAL)

    def never_ran(self, custom_id: str, message: str) -> dict[str, Any]:
        """An errored line in Anthropic's shape, typed ``not_processed``."""
        return {
            "custom_id": custom_id,
            "result": {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": "not_processed", "message": message},
                    "request_id": None,
                },
            },
        }


ANTHROPIC_RESULT_LINES = AnthropicResultLines()
"""How Anthropic's result lines read (``result.type``, and an errored line's error type)."""
