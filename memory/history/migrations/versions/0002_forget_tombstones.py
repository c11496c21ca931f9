"""Forget tombstones: a late write of a call begun before a forget is refused.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tombstone table."""
    op.create_table(
        "forgotten_callers",
        sa.Column("agent_id", sa.String(128), primary_key=True),
        sa.Column("caller_key", sa.String(80), primary_key=True),
        sa.Column(
            "forgotten_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="calls begun before are refused",
        ),
        comment="Tombstones: a late write of a call begun before the forget is refused.",
    )


def downgrade() -> None:
    """Drop the tombstones."""
    op.drop_table("forgotten_callers")
