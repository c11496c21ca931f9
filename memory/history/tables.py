"""The call history's tables: one row per call, its analysis, its redacted transcript.

Every row belongs to one agent and names its caller by the keyed hash only (the same key Redis
uses, see :mod:`memory.privacy.identity`) and the masked number: no raw number is ever stored.
Times are UTC timestamps, so a person can ask ``ended_at >= now() - interval '30 days'``.

The indexes serve the questions a business asks of a year of calls:

- everything of one agent in a period (``calls export --since``): ``calls (agent_id, ended_at)``;
- what one caller called about, when (and forgetting them): ``calls (agent_id, caller_key,
  started_at)``;
- the urgent calls, or one follow-up action, last month: ``analyses (agent_id, urgency)`` and
  ``analyses (agent_id, action)``, joined to the period on ``calls``.

The schema is created and upgraded by the Alembic migrations beside this module
(``migrations/``); these definitions are what the store queries, and the test suite checks that
the migrations build exactly them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator


class UtcTime(TypeDecorator[float]):
    """An epoch-seconds float in Python, a UTC timestamp in the database.

    Postgres stores ``timestamp with time zone``; SQLite stores the UTC time as text, which
    compares correctly with ``datetime('now', '-30 days')``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: float | None, dialect: Dialect) -> datetime | None:
        """Epoch seconds to an aware UTC datetime (SQLite keeps it without the offset)."""
        if value is None:
            return None
        moment = datetime.fromtimestamp(value, UTC)
        return moment.replace(tzinfo=None) if dialect.name == "sqlite" else moment

    def process_result_value(self, value: Any, dialect: Dialect) -> float | None:
        """A stored timestamp (naive ones are UTC) back to epoch seconds."""
        if value is None:
            return None
        moment: datetime = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.timestamp()


METADATA = MetaData()

#: Longest agent id or call id kept (agent ids are at most 64 characters; platform call ids
#: are UUIDs or similar).
ID_CHARS = 128
#: Longest caller key (``v1.`` and 64 hex digits today; room for a longer scheme).
KEY_CHARS = 80

calls = Table(
    "calls",
    METADATA,
    Column("agent_id", String(ID_CHARS), primary_key=True),
    Column("call_id", String(ID_CHARS), primary_key=True),
    Column("caller_key", String(KEY_CHARS), nullable=False, comment="HMAC of agent and number"),
    Column("masked_number", String(32)),
    Column("status", String(16), nullable=False, comment="ended, analysed or failed"),
    Column("trust", String(16)),
    Column("language", String(35)),
    Column("started_at", UtcTime, nullable=False),
    Column("ended_at", UtcTime),
    Column("ended_reason", Text),
    Column("duration_s", Float),
    Column("transfer_target", Text),
    Column("transfer_reason", Text),
    Column("transferred_at", UtcTime),
    Column("error", Text, comment="why the analysis failed for good (dead letter)"),
    Column("cost", Float),
    Column("currency", String(3)),
    Column("report", JSON, comment="latency, usage and cost lines (memory.report.CallReport)"),
    Column("recorded_at", UtcTime, nullable=False),
    Index("calls_by_period", "agent_id", "ended_at"),
    Index("calls_by_caller", "agent_id", "caller_key", "started_at"),
)

analyses = Table(
    "analyses",
    METADATA,
    Column("agent_id", String(ID_CHARS), primary_key=True),
    Column("call_id", String(ID_CHARS), primary_key=True),
    Column("summary", Text, nullable=False),
    Column("urgency", SmallInteger, nullable=False),
    Column("action", Text, nullable=False),
    Column("sentiment", String(16), nullable=False),
    Column("language", String(35), nullable=False),
    Column("caller_name", String(80)),
    Column("fields", JSON, nullable=False, comment="the business's own fields, by name"),
    Column("dropped_fields", JSON, nullable=False),
    ForeignKeyConstraint(
        ["agent_id", "call_id"], ["calls.agent_id", "calls.call_id"], ondelete="CASCADE"
    ),
    Index("analyses_by_urgency", "agent_id", "urgency"),
    Index("analyses_by_action", "agent_id", "action"),
)

turns = Table(
    "turns",
    METADATA,
    Column("agent_id", String(ID_CHARS), primary_key=True),
    Column("call_id", String(ID_CHARS), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("role", String(16), nullable=False, comment="user (the caller) or assistant"),
    Column("text", Text, nullable=False, comment="scrubbed of card numbers and secrets"),
    Column("at", UtcTime, nullable=False),
    ForeignKeyConstraint(
        ["agent_id", "call_id"], ["calls.agent_id", "calls.call_id"], ondelete="CASCADE"
    ),
)

forgotten = Table(
    "forgotten_callers",
    METADATA,
    Column("agent_id", String(ID_CHARS), primary_key=True),
    Column("caller_key", String(KEY_CHARS), primary_key=True),
    Column("forgotten_at", UtcTime, nullable=False, comment="calls begun before are refused"),
    comment="Tombstones: a late write of a call begun before the forget is refused.",
)
