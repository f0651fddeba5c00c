"""The ledger's tables (SQLAlchemy Core, no ORM).

The migrations in ``migrations/versions`` create exactly this schema; a test compares the two
on both dialects, so a change here needs a new revision. Timestamps are epoch seconds (UTC)
as double-precision floats, the unit of :class:`orchestrator.clock.Clock`. JSON values
(inputs, metadata, uploaded file ids) are stored as JSON text so both dialects read them the
same way.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from orchestrator.model import JobState, Outcome

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Deterministic constraint names: Alembic's SQLite batch mode needs them to alter tables."""

NAME_WIDTH = 160
"""Width of ``jobs.name``: a job name (at most 128) and a part's ``/part-NNNN`` suffix."""

FILE_KINDS = ("output", "error")
"""The kinds of result file a job can have, one of each at most."""

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class JSONText(sa.TypeDecorator[Any]):
    """A JSON value stored as compact text (the same on SQLite and PostgreSQL)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), sort_keys=True)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return json.loads(value)


def _in(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK that ``column`` holds one of ``values``."""
    listed = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({listed})"


_STATES = tuple(state.value for state in JobState)
_OUTCOMES = tuple(outcome.value for outcome in Outcome)

Timestamp = sa.Double
"""Epoch seconds, UTC."""

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # 128 for a name the operator writes, plus room for a part's "/part-NNNN" suffix.
    sa.Column("name", sa.String(NAME_WIDTH), nullable=False),
    sa.Column("workspace", sa.String(128), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("endpoint", sa.String(256), nullable=False),
    sa.Column("inputs", JSONText, nullable=False),
    sa.Column("metadata", JSONText, nullable=False),
    sa.Column("timeout_hours", sa.Integer, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("definition_hash", sa.String(128), nullable=False),
    # Travels in the remote job's metadata; random, so two ledgers on one workspace (or a
    # ledger rebuilt from scratch) can never adopt each other's jobs during recovery.
    sa.Column("client_token", sa.String(64), nullable=False),
    sa.Column("request_count", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("remote_id", sa.String(256), nullable=True),
    sa.Column("remote_status", sa.String(64), nullable=True),
    sa.Column("input_file_ids", JSONText, nullable=False),
    sa.Column("output_file_id", sa.String(256), nullable=True),
    sa.Column("error_file_id", sa.String(256), nullable=True),
    sa.Column("total", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("completed", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("succeeded", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("failed", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("step_retries", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("not_before", Timestamp, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("submitted_at", Timestamp, nullable=True),
    sa.Column("finished_at", Timestamp, nullable=True),
    # Leases for several daemons on one PostgreSQL ledger (design §8).
    sa.Column("claimed_by", sa.String(256), nullable=True),
    sa.Column("lease_until", Timestamp, nullable=True),
    # Splitting (design §3): a part points at its parent; a parent counts its parts (> 0).
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=True),
    sa.Column("part_count", sa.Integer, nullable=False, server_default=sa.text("0")),
    # Token budgets (OpenAI's enqueued prompt tokens per model): the estimate made at intake.
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    # The sha256 of each uploaded file's bytes (what the provider got, which may differ from
    # the input file: OpenAI lines gain method, url and model), aligned with input_file_ids.
    sa.Column("input_file_sha256s", JSONText, nullable=False, server_default=sa.text("'[]'")),
    # Retries (issue #14): an attempt points at the job it retries (``retry_of``) and has its
    # number; the job itself is attempt 1 and ``attempt`` is then its latest attempt's number.
    # ``max_attempts`` is the limit resolved at intake (NULL: the workspace's, for jobs
    # recorded before); ``attempt_info`` is JSON: why an attempt was made, or, on the job,
    # how its own remote job (attempt 1) ended.
    sa.Column("retry_of", sa.Integer, sa.ForeignKey("jobs.id"), nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Column("max_attempts", sa.Integer, nullable=True),
    sa.Column("attempt_info", JSONText, nullable=True),
    # The output tokens its requests may produce (the cost estimate's output side): the sum of
    # the caps they set, and how many set none (NULL: recorded before it was counted).
    sa.Column("max_output_tokens", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("uncapped_requests", sa.BigInteger, nullable=True),
    # Usage from results (sums over the job's own result files), NULL until they are in.
    sa.Column("usage_prompt_tokens", sa.BigInteger, nullable=True),
    sa.Column("usage_completion_tokens", sa.BigInteger, nullable=True),
    sa.Column("usage_total_tokens", sa.BigInteger, nullable=True),
    sa.Column("usage_lines", sa.BigInteger, nullable=True),
    sa.Column("usage_lines_without", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("name"),
    sa.UniqueConstraint("client_token"),
    sa.CheckConstraint(_in("state", _STATES), name="state"),
    sa.CheckConstraint(f"outcome IS NULL OR {_in('outcome', _OUTCOMES)}", name="outcome"),
    sa.Index("ix_jobs_workspace_state", "workspace", "state"),
    sa.Index("ix_jobs_parent_id", "parent_id"),
    sa.Index("ix_jobs_retry_of", "retry_of"),
)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("from_state", sa.String(16), nullable=True),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("remote_status", sa.String(64), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Index("ix_job_events_job_id", "job_id", "id"),
)

result_files = sa.Table(
    "result_files",
    metadata,
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("lines", sa.BigInteger, nullable=False),
    sa.Column("recorded_at", Timestamp, nullable=False),
    # Tokens its lines reported, summed while it was downloaded (NULL: recorded before).
    sa.Column("prompt_tokens", sa.BigInteger, nullable=True),
    sa.Column("completion_tokens", sa.BigInteger, nullable=True),
    sa.Column("total_tokens", sa.BigInteger, nullable=True),
    sa.Column("usage_lines_without", sa.BigInteger, nullable=True),
    sa.PrimaryKeyConstraint("job_id", "kind"),
    sa.CheckConstraint(_in("kind", FILE_KINDS), name="kind"),
)

DELIVERY_STATES = ("pending", "delivered", "dead")
"""A delivery waits (and is retried), reached its endpoint, or was given up after max_age."""

outbox_events = sa.Table(
    "outbox_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("occurred_at", Timestamp, nullable=False),
    # The Standard Webhooks message id: the same on every delivery and redelivery.
    sa.Column("webhook_id", sa.String(64), nullable=False),
    # The JSON body, frozen once made: in the state change's transaction when the job row
    # holds the data, else on first delivery (job.done: the job.json fields).
    sa.Column("body", sa.Text, nullable=True),
    sa.UniqueConstraint("webhook_id"),
    sa.Index("ix_outbox_events_job_id", "job_id"),
)

outbox_deliveries = sa.Table(
    "outbox_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "event_id",
        sa.Integer,
        sa.ForeignKey("outbox_events.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("endpoint", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    # Retries run for the endpoint's max_age after this: the event, or a redelivery.
    sa.Column("since", Timestamp, nullable=False),
    sa.Column("next_attempt_at", Timestamp, nullable=False),
    sa.Column("last_attempt_at", Timestamp, nullable=True),
    sa.Column("last_status", sa.String(64), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    # The tail of a hook's output, or the start of a receiver's answer.
    sa.Column("last_output", sa.Text, nullable=True),
    sa.Column("delivered_at", Timestamp, nullable=True),
    # One replica at a time per delivery (design §8): the claim lasts one attempt.
    sa.Column("claimed_by", sa.String(256), nullable=True),
    sa.Column("lease_until", Timestamp, nullable=True),
    sa.UniqueConstraint("event_id", "endpoint"),
    sa.CheckConstraint(_in("state", DELIVERY_STATES), name="state"),
    sa.Index("ix_outbox_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
)
