"""Split jobs into parts: jobs.parent_id, jobs.part_count, a wider jobs.name.

A part of a split job points at its parent (``parent_id``, indexed); a parent records how many
parts it has (``part_count > 0``). ``name`` widens from 128 to 160 characters for the parts'
``<name>/part-NNNN`` names. Downgrading a ledger that holds split jobs fails on PostgreSQL when
a part's name no longer fits in 128 characters; otherwise the parts stay as ordinary jobs.

Revision ID: 910183ebc453
Revises: db86b8589d7f
Create Date: 2026-11-23 14:17:25.834804+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "910183ebc453"
down_revision: str | None = "db86b8589d7f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _jobs_at_db86b8589d7f() -> sa.Table:
    """The jobs table as the previous revision left it.

    SQLite's batch mode copies the table; offline (``--sql``) it cannot reflect it, so it is
    given here, frozen.
    """
    return sa.Table(
        "jobs",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(length=128), nullable=False),
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
        sa.Index("ix_jobs_workspace_state", "workspace", "state"),
    )


def _offline_copy() -> sa.Table | None:
    """``copy_from`` for batch mode when rendering SQL offline, else None (reflect)."""
    return _jobs_at_db86b8589d7f() if op.get_context().as_sql else None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None, copy_from=_offline_copy()) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("part_count", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.alter_column(
            "name",
            existing_type=sa.String(length=128),
            type_=sa.String(length=160),
            existing_nullable=False,
        )
        batch_op.create_index("ix_jobs_parent_id", ["parent_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_parent_id_jobs"), "jobs", ["parent_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_parent_id_jobs"), type_="foreignkey")
        batch_op.drop_index("ix_jobs_parent_id")
        batch_op.alter_column(
            "name",
            existing_type=sa.String(length=160),
            type_=sa.String(length=128),
            existing_nullable=False,
        )
        batch_op.drop_column("part_count")
        batch_op.drop_column("parent_id")
