"""S/MIME protocols: pinned sender certificates and the signature requirement.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("protocol") as batch:
        batch.add_column(sa.Column("sender_certificates", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("require_signature", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("protocol") as batch:
        batch.drop_column("require_signature")
        batch.drop_column("sender_certificates")
