"""The entitlement store keeps its history: each row becomes a version with recorded_from/recorded_to.

``recorded_from`` is when the store learnt a version, ``recorded_to`` when a later import
superseded or withdrew it (``NULL``: current). The rows already in the store become versions
recorded at the moment of this migration: the store cannot know when the agency recorded them
before it kept history, and claiming an earlier moment would invent knowledge.

The unique constraint on (child, beneficiary, supplement, start date) now holds for current
versions only (a partial unique index); history lives beside them. Indexes on both recorded
moments serve the feeds ("what was recorded during this month").

Downgrading drops the history (superseded and withdrawn versions), which the old schema cannot
hold, and keeps the current versions.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_CURRENT = "recorded_to IS NULL"
_KEY = ["child_id", "beneficiary_id", "supplement", "start_date"]


def upgrade() -> None:
    with op.batch_alter_table("entitlement") as batch:
        batch.add_column(sa.Column("recorded_from", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("recorded_to", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint("uq_entitlement", type_="unique")
    migrated_at = dt.datetime.now(dt.timezone.utc)
    op.get_bind().execute(
        sa.text("UPDATE entitlement SET recorded_from = :at").bindparams(
            sa.bindparam("at", value=migrated_at, type_=sa.DateTime(timezone=True))
        )
    )
    with op.batch_alter_table("entitlement") as batch:
        batch.alter_column("recorded_from", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_index(
        "uq_entitlement_current", "entitlement", _KEY, unique=True,
        sqlite_where=sa.text(_CURRENT), postgresql_where=sa.text(_CURRENT),
    )
    op.create_index("ix_entitlement_recorded_from", "entitlement", ["recorded_from"])
    op.create_index("ix_entitlement_recorded_to", "entitlement", ["recorded_to"])
    # Statistics for the new indexes: without them SQLite's planner reads a feed's changes by
    # scanning every sociale toeslag (0.5 s on a 2M-child store with them, 4.5 s without).
    op.execute("ANALYZE entitlement")


def downgrade() -> None:
    op.drop_index("ix_entitlement_recorded_to", table_name="entitlement")
    op.drop_index("ix_entitlement_recorded_from", table_name="entitlement")
    op.drop_index("uq_entitlement_current", table_name="entitlement")
    op.execute("DELETE FROM entitlement WHERE recorded_to IS NOT NULL")
    with op.batch_alter_table("entitlement") as batch:
        batch.drop_column("recorded_to")
        batch.drop_column("recorded_from")
        batch.create_unique_constraint("uq_entitlement", _KEY)
