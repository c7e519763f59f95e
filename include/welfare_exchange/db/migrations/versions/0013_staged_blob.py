"""Staged files in the project database: the ``postgres`` staging back end.

With more than one worker host, the tasks of one exchange run where a slot is free; a local
staging folder is on one host only. ``staged_blob`` holds each staged file, sealed with the
staging key, where every worker reaches it.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staged_blob",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("protocol_id", sa.Integer, nullable=False, index=True),
        sa.Column("exchange_id", sa.Integer, nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("exchange_id", "name", name="uq_staged_blob"),
    )


def downgrade() -> None:
    op.drop_table("staged_blob")
