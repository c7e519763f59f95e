"""A retention item is one exchange's copy: unique per (kind, location, exchange), not per location.

Municipalities reuse file names (``aanvraag.xlsx`` every month). Once one exchange's copy in
``received/`` was deleted, the next exchange's request lands at the same path; with the old
constraint on (kind, location) its deletion was never recorded (the deleted item stood in the
way), and a quarantine of the newer request could move the older exchange's item. Existing rows
are unique per location already, so they stay as they are.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("retention_item") as batch:
        batch.drop_constraint("uq_retention_location", type_="unique")
        batch.create_unique_constraint("uq_retention_copy", ["kind", "location", "exchange_id"])


def downgrade() -> None:
    # Only possible while every location is held by one item; otherwise the old constraint
    # would have to drop a copy's deletion record, which is refused.
    with op.batch_alter_table("retention_item") as batch:
        batch.drop_constraint("uq_retention_copy", type_="unique")
        batch.create_unique_constraint("uq_retention_location", ["kind", "location"])
