"""initial schema

Revision ID: 0001
Revises: 

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_anchor',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('through_id', sa.Integer(), nullable=False),
    sa.Column('head_hash', sa.String(length=64), nullable=False),
    sa.Column('pruned_at', sa.String(length=40), nullable=False),
    sa.Column('records_pruned', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('last_id', sa.Integer(), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('audit_prune_permit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('through_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('audit_record',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('recorded_at', sa.String(length=40), nullable=False),
    sa.Column('actor_type', sa.String(length=10), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('dag_id', sa.String(length=250), nullable=True),
    sa.Column('run_id', sa.String(length=250), nullable=True),
    sa.Column('task_id', sa.String(length=250), nullable=True),
    sa.Column('try_number', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('protocol_id', sa.Integer(), nullable=True),
    sa.Column('legal_basis', sa.Text(), nullable=True),
    sa.Column('exchange_id', sa.Integer(), nullable=True),
    sa.Column('data_categories', sa.JSON(), nullable=True),
    sa.Column('file_hashes', sa.JSON(), nullable=True),
    sa.Column('counts', sa.JSON(), nullable=True),
    sa.Column('subject_ref', sa.String(length=64), nullable=True),
    sa.Column('subjects_count', sa.Integer(), nullable=True),
    sa.Column('subjects_digest', sa.String(length=64), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('fact_key', sa.String(length=250), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('record_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('fact_key')
    )
    with op.batch_alter_table('audit_record', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_record_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_record_exchange_id'), ['exchange_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_record_protocol_id'), ['protocol_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_record_subject_ref'), ['subject_ref'], unique=False)

    op.create_table('beneficiary',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('insz', sa.String(length=11), nullable=False),
    sa.Column('email', sa.String(length=250), nullable=True),
    sa.Column('address_line', sa.String(length=250), nullable=True),
    sa.Column('postcode', sa.String(length=10), nullable=True),
    sa.Column('city', sa.String(length=120), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('insz')
    )
    op.create_table('child',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('insz', sa.String(length=11), nullable=False),
    sa.Column('birth_date', sa.Date(), nullable=False),
    sa.Column('nis_code', sa.String(length=5), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('insz')
    )
    with op.batch_alter_table('child', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_child_nis_code'), ['nis_code'], unique=False)

    op.create_table('protocol',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('nis_code', sa.String(length=5), nullable=False),
    sa.Column('municipality', sa.String(length=120), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('legal_basis', sa.Text(), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('college_decision_ref', sa.String(length=200), nullable=True),
    sa.Column('college_decision_date', sa.Date(), nullable=True),
    sa.Column('dpo_advice_date', sa.Date(), nullable=True),
    sa.Column('signature_date', sa.Date(), nullable=True),
    sa.Column('valid_from', sa.Date(), nullable=True),
    sa.Column('valid_until', sa.Date(), nullable=True),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('channel_connection', sa.String(length=250), nullable=False),
    sa.Column('key_connection', sa.String(length=250), nullable=False),
    sa.Column('sender_address', sa.String(length=250), nullable=True),
    sa.Column('allowed_fields', sa.JSON(), nullable=False),
    sa.Column('reference_date', sa.Date(), nullable=False),
    sa.Column('supplements', sa.JSON(), nullable=False),
    sa.Column('age_min', sa.Integer(), nullable=False),
    sa.Column('age_max', sa.Integer(), nullable=False),
    sa.Column('request_retention_days', sa.Integer(), nullable=False),
    sa.Column('result_retention_days', sa.Integer(), nullable=False),
    sa.Column('delete_request_after_match', sa.Boolean(), nullable=False),
    sa.Column('schedule', sa.String(length=100), nullable=True),
    sa.Column('offer', sa.JSON(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('status_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('protocol', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_protocol_nis_code'), ['nis_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_protocol_status'), ['status'], unique=False)

    op.create_table('audit_subject',
    sa.Column('audit_id', sa.Integer(), nullable=False),
    sa.Column('subject_ref', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['audit_id'], ['audit_record.id'], ),
    sa.PrimaryKeyConstraint('audit_id', 'subject_ref')
    )
    with op.batch_alter_table('audit_subject', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_subject_subject_ref'), ['subject_ref'], unique=False)

    op.create_table('entitlement',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('child_id', sa.Integer(), nullable=False),
    sa.Column('beneficiary_id', sa.Integer(), nullable=False),
    sa.Column('supplement', sa.String(length=20), nullable=False),
    sa.Column('start_date', sa.Date(), nullable=False),
    sa.Column('end_date', sa.Date(), nullable=True),
    sa.ForeignKeyConstraint(['beneficiary_id'], ['beneficiary.id'], ),
    sa.ForeignKeyConstraint(['child_id'], ['child.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('child_id', 'beneficiary_id', 'supplement', 'start_date', name='uq_entitlement')
    )
    with op.batch_alter_table('entitlement', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_entitlement_beneficiary_id'), ['beneficiary_id'], unique=False)
        batch_op.create_index('ix_entitlement_child_supplement', ['child_id', 'supplement', 'start_date'], unique=False)
        batch_op.create_index('ix_entitlement_supplement_dates', ['supplement', 'start_date', 'end_date'], unique=False)

    op.create_table('exchange',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('protocol_id', sa.Integer(), nullable=False),
    sa.Column('request_sha256', sa.String(length=64), nullable=False),
    sa.Column('request_name', sa.String(length=250), nullable=True),
    sa.Column('request_size', sa.BigInteger(), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('failure_code', sa.String(length=50), nullable=True),
    sa.Column('dag_id', sa.String(length=250), nullable=True),
    sa.Column('run_id', sa.String(length=250), nullable=True),
    sa.Column('exchange_date', sa.Date(), nullable=True),
    sa.Column('counts', sa.JSON(), nullable=True),
    sa.Column('result_sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['protocol_id'], ['protocol.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('protocol_id', 'request_sha256', name='uq_exchange_request')
    )
    with op.batch_alter_table('exchange', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_exchange_protocol_id'), ['protocol_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_exchange_state'), ['state'], unique=False)

    op.create_table('protocol_transition',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('protocol_id', sa.Integer(), nullable=False),
    sa.Column('from_status', sa.String(length=20), nullable=True),
    sa.Column('to_status', sa.String(length=20), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['protocol_id'], ['protocol.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('protocol_transition', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_protocol_transition_protocol_id'), ['protocol_id'], unique=False)

    op.create_table('retention_item',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('exchange_id', sa.Integer(), nullable=True),
    sa.Column('protocol_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('where', sa.String(length=10), nullable=False),
    sa.Column('location', sa.String(length=500), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('rule', sa.String(length=100), nullable=False),
    sa.Column('deadline', sa.Date(), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deletion_outcome', sa.String(length=30), nullable=True),
    sa.ForeignKeyConstraint(['exchange_id'], ['exchange.id'], ),
    sa.ForeignKeyConstraint(['protocol_id'], ['protocol.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'location', name='uq_retention_location')
    )
    with op.batch_alter_table('retention_item', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_retention_item_deadline'), ['deadline'], unique=False)
        batch_op.create_index(batch_op.f('ix_retention_item_exchange_id'), ['exchange_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_retention_item_protocol_id'), ['protocol_id'], unique=False)

    op.create_table('side_effect',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('exchange_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('idempotency_key', sa.String(length=250), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('target', sa.String(length=500), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['exchange_id'], ['exchange.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key')
    )
    with op.batch_alter_table('side_effect', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_side_effect_exchange_id'), ['exchange_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('side_effect', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_side_effect_exchange_id'))

    op.drop_table('side_effect')
    with op.batch_alter_table('retention_item', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_retention_item_protocol_id'))
        batch_op.drop_index(batch_op.f('ix_retention_item_exchange_id'))
        batch_op.drop_index(batch_op.f('ix_retention_item_deadline'))

    op.drop_table('retention_item')
    with op.batch_alter_table('protocol_transition', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_protocol_transition_protocol_id'))

    op.drop_table('protocol_transition')
    with op.batch_alter_table('exchange', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_exchange_state'))
        batch_op.drop_index(batch_op.f('ix_exchange_protocol_id'))

    op.drop_table('exchange')
    with op.batch_alter_table('entitlement', schema=None) as batch_op:
        batch_op.drop_index('ix_entitlement_supplement_dates')
        batch_op.drop_index('ix_entitlement_child_supplement')
        batch_op.drop_index(batch_op.f('ix_entitlement_beneficiary_id'))

    op.drop_table('entitlement')
    with op.batch_alter_table('audit_subject', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_subject_subject_ref'))

    op.drop_table('audit_subject')
    with op.batch_alter_table('protocol', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_protocol_status'))
        batch_op.drop_index(batch_op.f('ix_protocol_nis_code'))

    op.drop_table('protocol')
    with op.batch_alter_table('child', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_child_nis_code'))

    op.drop_table('child')
    op.drop_table('beneficiary')
    with op.batch_alter_table('audit_record', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_record_subject_ref'))
        batch_op.drop_index(batch_op.f('ix_audit_record_protocol_id'))
        batch_op.drop_index(batch_op.f('ix_audit_record_exchange_id'))
        batch_op.drop_index(batch_op.f('ix_audit_record_action'))

    op.drop_table('audit_record')
    op.drop_table('audit_prune_permit')
    op.drop_table('audit_head')
    op.drop_table('audit_anchor')
