"""Referral to the Sociaal Huis: the cooperation agreement on the protocol, candidates, the referral ledger.

* ``protocol`` gains the *samenwerkingsovereenkomst* (reference and date), the professional-secrecy
  conditions it sets, and whether the family's consent is required (always, for a referral);
* ``referral_candidate``: families Kind en Gezin proposes (keyed reference of the child, birth month,
  domicile, criteria flagged, consent dates; the parent's contact details sealed with the staging key);
* ``referral``: one row per family per agreement — the exactly-once ledger of referrals, with the
  list (exchange) it was sent in and the withdrawal notice that followed;
* ``referral_feedback``: the Sociaal Huis's outcomes per referral.

Revision ID: 0011
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place (ALTER TABLE ADD COLUMN), never a batch copy: on SQLite a copy drops ``protocol``,
    # which the rows of protocol_transition and exchange reference.
    op.add_column("protocol", sa.Column("agreement_ref", sa.String(length=200), nullable=True))
    op.add_column("protocol", sa.Column("agreement_date", sa.Date(), nullable=True))
    op.add_column("protocol", sa.Column("secrecy_conditions", sa.Text(), nullable=True))
    op.add_column("protocol", sa.Column("consent_required", sa.Boolean(), nullable=False, server_default=sa.false()))

    op.create_table(
        "referral_candidate",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("family_ref", sa.LargeBinary(length=32), nullable=False),
        sa.Column("parent_ref", sa.LargeBinary(length=32), nullable=True),
        sa.Column("birth_month", sa.String(length=7), nullable=False),
        sa.Column("nis_code", sa.String(length=5), nullable=False),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.Column("criteria_count", sa.Integer(), nullable=False),
        sa.Column("contact_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("consent_given_on", sa.Date(), nullable=True),
        sa.Column("consent_withdrawn_on", sa.Date(), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("family_ref", name="uq_referral_candidate_family"),
    )
    op.create_index("ix_referral_candidate_selection", "referral_candidate", ["nis_code", "criteria_count"])
    op.create_index("ix_referral_candidate_parent_ref", "referral_candidate", ["parent_ref"])

    op.create_table(
        "referral",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("protocol_id", sa.Integer(), sa.ForeignKey("protocol.id"), nullable=False),
        sa.Column("candidate_id", sa.Integer(), sa.ForeignKey("referral_candidate.id"), nullable=False),
        sa.Column("family_ref", sa.LargeBinary(length=32), nullable=False),
        sa.Column("code", sa.String(length=20), nullable=False),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.Column("exchange_id", sa.Integer(), sa.ForeignKey("exchange.id"), nullable=False),
        sa.Column("listed_on", sa.Date(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_on", sa.Date(), nullable=True),
        sa.Column("notice_exchange_id", sa.Integer(), sa.ForeignKey("exchange.id"), nullable=True),
        sa.UniqueConstraint("protocol_id", "family_ref", name="uq_referral_family"),
        sa.UniqueConstraint("code", name="uq_referral_code"),
    )
    op.create_index("ix_referral_exchange_id", "referral", ["exchange_id"])
    op.create_index("ix_referral_family_ref", "referral", ["family_ref"])

    op.create_table(
        "referral_feedback",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("referral_id", sa.Integer(), sa.ForeignKey("referral.id"), nullable=False),
        sa.Column("exchange_id", sa.Integer(), sa.ForeignKey("exchange.id"), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("outcome_date", sa.Date(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("referral_id", "outcome", "outcome_date", name="uq_referral_feedback"),
    )
    op.create_index("ix_referral_feedback_referral_id", "referral_feedback", ["referral_id"])


def downgrade() -> None:
    op.drop_index("ix_referral_feedback_referral_id", table_name="referral_feedback")
    op.drop_table("referral_feedback")
    op.drop_index("ix_referral_family_ref", table_name="referral")
    op.drop_index("ix_referral_exchange_id", table_name="referral")
    op.drop_table("referral")
    op.drop_index("ix_referral_candidate_parent_ref", table_name="referral_candidate")
    op.drop_index("ix_referral_candidate_selection", table_name="referral_candidate")
    op.drop_table("referral_candidate")
    for column in ("consent_required", "secrecy_conditions", "agreement_date", "agreement_ref"):
        # In place as well (SQLite 3.35+ drops a column without copying the table).
        op.execute(f"ALTER TABLE protocol DROP COLUMN {column}")
