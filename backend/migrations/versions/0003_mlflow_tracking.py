"""MLflow-compatible tracking: experiments, and the MLflow side of registry runs.

Seeds experiment 0, ``Default``, which MLflow clients log to when no experiment is set.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 07:45:00.000000
"""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    experiments = op.create_table('mlflow_experiments',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=500), nullable=False),
    sa.Column('artifact_location', sa.Text(), nullable=False),
    sa.Column('lifecycle_stage', sa.String(length=16), nullable=False),
    sa.Column('tags', _json, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    )
    op.create_table('mlflow_runs',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('tags', _json, nullable=False),
    sa.Column('start_time', sa.BigInteger(), nullable=False),
    sa.Column('end_time', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['experiment_id'], ['mlflow_experiments.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id'),
    )
    op.create_index('ix_mlflow_runs_experiment_id', 'mlflow_runs', ['experiment_id'])
    op.bulk_insert(experiments, [{'id': 0, 'name': 'Default', 'artifact_location': '', 'lifecycle_stage': 'active',
                                  'tags': {}, 'created_at': datetime.now(timezone.utc)}])


def downgrade() -> None:
    op.drop_index('ix_mlflow_runs_experiment_id', table_name='mlflow_runs')
    op.drop_table('mlflow_runs')
    op.drop_table('mlflow_experiments')
