"""Token budgets and upload digests: jobs.prompt_tokens, jobs.input_file_sha256s.

``prompt_tokens`` is the prompt-token estimate made at intake (0 for the jobs recorded before:
they are counted as no tokens, which only a token budget reads). ``input_file_sha256s`` lists
the sha256 of each uploaded file's bytes, aligned with ``input_file_ids`` (empty for the jobs
uploaded before). Both columns have constant defaults, so SQLite adds them in place.

Revision ID: 5c3e1f0a9b27
Revises: 910183ebc453
Create Date: 2026-12-02 16:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c3e1f0a9b27"
down_revision: str | None = "910183ebc453"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("prompt_tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "jobs",
        sa.Column(
            "input_file_sha256s", sa.Text(), server_default=sa.text("'[]'"), nullable=False
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("input_file_sha256s")
        batch_op.drop_column("prompt_tokens")
