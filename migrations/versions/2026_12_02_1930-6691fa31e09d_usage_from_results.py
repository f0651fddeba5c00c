"""Usage from results: tokens per result file and per job; the output caps of a job's requests.

``result_files`` gains the tokens its lines reported (``prompt_tokens``, ``completion_tokens``,
``total_tokens``) and ``usage_lines_without`` (lines that reported none); ``jobs`` gains the sums
over its files once its results are in (``usage_*``). Every column is nullable: NULL means the
file or job was recorded before usage was read (or, for a job, its results are not in yet), which
is not the same as zero tokens. ``jobs.max_output_tokens`` sums the output caps (``max_tokens``)
its requests set and ``jobs.uncapped_requests`` counts those that set none (NULL for the jobs
recorded before: all their requests count as uncapped), for the cost estimate. SQLite adds these
columns in place (nullable, or with a constant default).

Revision ID: 6691fa31e09d
Revises: 5c3e1f0a9b27
Create Date: 2026-12-02 19:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "6691fa31e09d"
down_revision: str | None = "5c3e1f0a9b27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILE_COLUMNS = ("prompt_tokens", "completion_tokens", "total_tokens", "usage_lines_without")
JOB_COLUMNS = (
    "usage_prompt_tokens",
    "usage_completion_tokens",
    "usage_total_tokens",
    "usage_lines",
    "usage_lines_without",
)


def upgrade() -> None:
    for name in FILE_COLUMNS:
        op.add_column("result_files", sa.Column(name, sa.BigInteger(), nullable=True))
    for name in JOB_COLUMNS:
        op.add_column("jobs", sa.Column(name, sa.BigInteger(), nullable=True))
    op.add_column(
        "jobs",
        sa.Column(
            "max_output_tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
    )
    op.add_column("jobs", sa.Column("uncapped_requests", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("uncapped_requests")
        batch_op.drop_column("max_output_tokens")
        for name in reversed(JOB_COLUMNS):
            batch_op.drop_column(name)
    with op.batch_alter_table("result_files", schema=None) as batch_op:
        for name in reversed(FILE_COLUMNS):
            batch_op.drop_column(name)
