"""Line retries: jobs.retry_of, attempt, max_attempts, attempt_info; attempts -> step_retries.

An attempt of a job (issue #14) is an ordinary job row that points at the job it retries
(``retry_of``, indexed) and carries its number (``attempt``; the job itself is attempt 1 and
records there the number of its latest attempt). ``max_attempts`` is the limit resolved at
intake (NULL for the jobs recorded before: the workspace's setting applies). ``attempt_info``
is JSON text: why an attempt was made, or on the job how its own remote job ended.

The old ``attempts`` column counted retried daemon steps (capacity refusals, transient
faults); it is renamed ``step_retries`` so that "attempts" means remote attempts everywhere.

Revision ID: 5ed0d132824f
Revises: 6691fa31e09d
Create Date: 2026-12-02 19:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5ed0d132824f"
down_revision: str | None = "6691fa31e09d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _jobs_at_6691fa31e09d() -> sa.Table:
    """The jobs table as the previous revision left it (for batch mode rendered offline)."""
    return sa.Table(
        "jobs",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(length=160), nullable=False),
        sa.Column("workspace", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("endpoint", sa.String(length=256), nullable=False),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("timeout_hours", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("definition_hash", sa.String(length=128), nullable=False),
        sa.Column("client_token", sa.String(length=64), nullable=False),
        sa.Column("request_count", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("remote_id", sa.String(length=256), nullable=True),
        sa.Column("remote_status", sa.String(length=64), nullable=True),
        sa.Column("input_file_ids", sa.Text(), nullable=False),
        sa.Column("output_file_id", sa.String(length=256), nullable=True),
        sa.Column("error_file_id", sa.String(length=256), nullable=True),
        sa.Column("total", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("completed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("succeeded", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("not_before", sa.Double(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("submitted_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("claimed_by", sa.String(length=256), nullable=True),
        sa.Column("lease_until", sa.Double(), nullable=True),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("part_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "input_file_sha256s", sa.Text(), server_default=sa.text("'[]'"), nullable=False
        ),
        sa.Column("usage_prompt_tokens", sa.BigInteger(), nullable=True),
        sa.Column("usage_completion_tokens", sa.BigInteger(), nullable=True),
        sa.Column("usage_total_tokens", sa.BigInteger(), nullable=True),
        sa.Column("usage_lines", sa.BigInteger(), nullable=True),
        sa.Column("usage_lines_without", sa.BigInteger(), nullable=True),
        sa.Column(
            "max_output_tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("uncapped_requests", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'admitted', 'submitting', 'running', 'collecting', 'done', "
            "'rejected')",
            name="ck_jobs_state",
        ),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('succeeded', 'partial', 'failed', 'expired', "
            "'cancelled')",
            name="ck_jobs_outcome",
        ),
        sa.UniqueConstraint("name", name="uq_jobs_name"),
        sa.UniqueConstraint("client_token", name="uq_jobs_client_token"),
        sa.ForeignKeyConstraint(["parent_id"], ["jobs.id"], name="fk_jobs_parent_id_jobs"),
        sa.Index("ix_jobs_workspace_state", "workspace", "state"),
        sa.Index("ix_jobs_parent_id", "parent_id"),
    )


def _offline_copy() -> sa.Table | None:
    """``copy_from`` for batch mode when rendering SQL offline, else None (reflect)."""
    return _jobs_at_6691fa31e09d() if op.get_context().as_sql else None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None, copy_from=_offline_copy()) as batch_op:
        batch_op.alter_column(
            "attempts",
            new_column_name="step_retries",
            existing_type=sa.Integer(),
            existing_server_default=sa.text("0"),
            existing_nullable=False,
        )
        batch_op.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("attempt", sa.Integer(), server_default=sa.text("1"), nullable=False)
        )
        batch_op.add_column(sa.Column("max_attempts", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("attempt_info", sa.Text(), nullable=True))
        batch_op.create_index("ix_jobs_retry_of", ["retry_of"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_retry_of_jobs"), "jobs", ["retry_of"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_retry_of_jobs"), type_="foreignkey")
        batch_op.drop_index("ix_jobs_retry_of")
        batch_op.drop_column("attempt_info")
        batch_op.drop_column("max_attempts")
        batch_op.drop_column("attempt")
        batch_op.drop_column("retry_of")
        batch_op.alter_column(
            "step_retries",
            new_column_name="attempts",
            existing_type=sa.Integer(),
            existing_server_default=sa.text("0"),
            existing_nullable=False,
        )
