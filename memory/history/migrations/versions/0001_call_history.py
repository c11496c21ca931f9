"""The call history: calls, their analyses and their redacted transcripts.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.String(128)
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the three tables and the indexes the history is queried by."""
    op.create_table(
        "calls",
        sa.Column("agent_id", _ID, primary_key=True),
        sa.Column("call_id", _ID, primary_key=True),
        sa.Column("caller_key", sa.String(80), nullable=False, comment="HMAC of agent and number"),
        sa.Column("masked_number", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False, comment="ended, analysed or failed"),
        sa.Column("trust", sa.String(16)),
        sa.Column("language", sa.String(35)),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("ended_at", _TIME),
        sa.Column("ended_reason", sa.Text),
        sa.Column("duration_s", sa.Float),
        sa.Column("transfer_target", sa.Text),
        sa.Column("transfer_reason", sa.Text),
        sa.Column("transferred_at", _TIME),
        sa.Column("error", sa.Text, comment="why the analysis failed for good (dead letter)"),
        sa.Column("cost", sa.Float),
        sa.Column("currency", sa.String(3)),
        sa.Column(
            "report",
            sa.JSON,
            comment="latency, usage and cost lines (memory.report.CallReport)",
        ),
        sa.Column("recorded_at", _TIME, nullable=False),
    )
    op.create_index("calls_by_period", "calls", ["agent_id", "ended_at"])
    op.create_index("calls_by_caller", "calls", ["agent_id", "caller_key", "started_at"])
    op.create_table(
        "analyses",
        sa.Column("agent_id", _ID, primary_key=True),
        sa.Column("call_id", _ID, primary_key=True),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("urgency", sa.SmallInteger, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("sentiment", sa.String(16), nullable=False),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("caller_name", sa.String(80)),
        sa.Column("fields", sa.JSON, nullable=False, comment="the business's own fields, by name"),
        sa.Column("dropped_fields", sa.JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id", "call_id"], ["calls.agent_id", "calls.call_id"], ondelete="CASCADE"
        ),
    )
    op.create_index("analyses_by_urgency", "analyses", ["agent_id", "urgency"])
    op.create_index("analyses_by_action", "analyses", ["agent_id", "action"])
    op.create_table(
        "turns",
        sa.Column("agent_id", _ID, primary_key=True),
        sa.Column("call_id", _ID, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("role", sa.String(16), nullable=False, comment="user (the caller) or assistant"),
        sa.Column("text", sa.Text, nullable=False, comment="scrubbed of card numbers and secrets"),
        sa.Column("at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id", "call_id"], ["calls.agent_id", "calls.call_id"], ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    """Drop the history (every call in it)."""
    op.drop_table("turns")
    op.drop_table("analyses")
    op.drop_table("calls")
