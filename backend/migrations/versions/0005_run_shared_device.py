"""Runs that shared a run's device while it executed (``runs.shared_device``, nullable JSON).

Embedded mode executes several runs at once when ``embedded_workers`` > 1; each run records the
others and the steps they overlapped, so its page can say its timings are not comparable.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 14:10:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('shared_device', _json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('shared_device')
