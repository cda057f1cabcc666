"""flow engine tables: runs, step runs, history, timers, incidents, outbox, API keys

Revision ID: 0005
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0002"
branch_labels = ("flows",)
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash')),
    sa.UniqueConstraint('name', name=op.f('uq_api_keys_name'))
    )
    op.create_table('outbox_messages',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('template_key', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('locale', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('urgent', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_by', sa.String(length=64), nullable=True),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source_ref', sa.String(length=255), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_outbox_messages_patient_id_patients')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_outbox_messages_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_messages')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_outbox_messages_idempotency_key'))
    )
    op.create_index(op.f('ix_outbox_messages_patient_id'), 'outbox_messages', ['patient_id'], unique=False)
    op.create_index(op.f('ix_outbox_messages_source_ref'), 'outbox_messages', ['source_ref'], unique=False)
    op.create_index('ix_outbox_messages_status_next', 'outbox_messages', ['status', 'next_attempt_at'], unique=False)
    op.create_table('flow_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('flow_key', sa.String(length=64), nullable=False),
    sa.Column('flow_version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('encounter_id', sa.String(length=64), nullable=True),
    sa.Column('context', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['encounter_id'], ['encounters.id'], name=op.f('fk_flow_runs_encounter_id_encounters')),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], name=op.f('fk_flow_runs_patient_id_patients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_runs')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_flow_runs_idempotency_key'))
    )
    op.create_index(op.f('ix_flow_runs_encounter_id'), 'flow_runs', ['encounter_id'], unique=False)
    op.create_index(op.f('ix_flow_runs_flow_key'), 'flow_runs', ['flow_key'], unique=False)
    op.create_index(op.f('ix_flow_runs_patient_id'), 'flow_runs', ['patient_id'], unique=False)
    op.create_table('flow_run_history',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('step_key', sa.String(length=64), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['flow_runs.id'], name=op.f('fk_flow_run_history_run_id_flow_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_run_history'))
    )
    op.create_index(op.f('ix_flow_run_history_run_id'), 'flow_run_history', ['run_id'], unique=False)
    op.create_table('flow_step_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('step_key', sa.String(length=64), nullable=False),
    sa.Column('step_type', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('waiting_for', sa.String(length=128), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('state', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['flow_runs.id'], name=op.f('fk_flow_step_runs_run_id_flow_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_step_runs'))
    )
    op.create_index(op.f('ix_flow_step_runs_run_id'), 'flow_step_runs', ['run_id'], unique=False)
    op.create_index('ix_flow_step_runs_waiting', 'flow_step_runs', ['waiting_for', 'status'], unique=False)
    op.create_table('flow_task_overdue',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('emitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_flow_task_overdue_task_id_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_task_overdue')),
    sa.UniqueConstraint('task_id', 'due_at', name='uq_flow_task_overdue_task_due')
    )
    op.create_table('flow_timers',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('step_run_id', sa.Integer(), nullable=True),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('claimed_by', sa.String(length=64), nullable=True),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('fired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['flow_runs.id'], name=op.f('fk_flow_timers_run_id_flow_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_timers'))
    )
    op.create_index(op.f('ix_flow_timers_run_id'), 'flow_timers', ['run_id'], unique=False)
    op.create_index('ix_flow_timers_status_due', 'flow_timers', ['status', 'due_at'], unique=False)
    op.create_table('flow_incidents',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('step_run_id', sa.Integer(), nullable=False),
    sa.Column('step_key', sa.String(length=64), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', sa.String(length=128), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['flow_runs.id'], name=op.f('fk_flow_incidents_run_id_flow_runs')),
    sa.ForeignKeyConstraint(['step_run_id'], ['flow_step_runs.id'], name=op.f('fk_flow_incidents_step_run_id_flow_step_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_incidents'))
    )
    op.create_index(op.f('ix_flow_incidents_run_id'), 'flow_incidents', ['run_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_flow_incidents_run_id'), table_name='flow_incidents')
    op.drop_table('flow_incidents')
    op.drop_index('ix_flow_timers_status_due', table_name='flow_timers')
    op.drop_index(op.f('ix_flow_timers_run_id'), table_name='flow_timers')
    op.drop_table('flow_timers')
    op.drop_table('flow_task_overdue')
    op.drop_index('ix_flow_step_runs_waiting', table_name='flow_step_runs')
    op.drop_index(op.f('ix_flow_step_runs_run_id'), table_name='flow_step_runs')
    op.drop_table('flow_step_runs')
    op.drop_index(op.f('ix_flow_run_history_run_id'), table_name='flow_run_history')
    op.drop_table('flow_run_history')
    op.drop_index(op.f('ix_flow_runs_patient_id'), table_name='flow_runs')
    op.drop_index(op.f('ix_flow_runs_flow_key'), table_name='flow_runs')
    op.drop_index(op.f('ix_flow_runs_encounter_id'), table_name='flow_runs')
    op.drop_table('flow_runs')
    op.drop_index('ix_outbox_messages_status_next', table_name='outbox_messages')
    op.drop_index(op.f('ix_outbox_messages_source_ref'), table_name='outbox_messages')
    op.drop_index(op.f('ix_outbox_messages_patient_id'), table_name='outbox_messages')
    op.drop_table('outbox_messages')
    op.drop_table('api_keys')
