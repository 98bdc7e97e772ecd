"""The config suggestion a run was launched from (``runs.origin``, nullable JSON).

Holds the source run, the suggestion's number and group, and its predicted peak and tokens/s, so the
run page can set the prediction against what the run measured.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:15:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('origin', _json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('origin')
