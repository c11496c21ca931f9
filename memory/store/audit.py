"""The audit list: every change a person made to an agent's memory, newest first.

Each entry says who (the name a dashboard user logged in with), when, what (``fact_edited``,
``fact_deleted``, ``name_set``, ``caller_forgotten``, ``follow_up_done``, ``dead_letter_retried``,
``called_back``, ``number_shown``, ``agent_callback_requested``)
and to whom: the caller's masked number and ids (call id, fact id), never a raw number or the
words of a memory. One capped Redis list per agent, ``{prefix}:{agent:A}:audit``.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field, ValidationError
from redis.asyncio import Redis

from memory.backend.reply import redis_reply
from memory.models import now, to_ms
from memory.store.keys import KeyLayout

#: Entries kept per agent (oldest dropped first).
MAX_ENTRIES = 10_000


class AuditAction(StrEnum):
    """What a person changed."""

    FACT_EDITED = "fact_edited"
    FACT_DELETED = "fact_deleted"
    NAME_SET = "name_set"
    CALLER_FORGOTTEN = "caller_forgotten"
    FOLLOW_UP_DONE = "follow_up_done"
    DEAD_LETTER_RETRIED = "dead_letter_retried"
    #: A person's phone was bridged to the caller (the number used, not shown).
    CALLED_BACK = "called_back"
    #: The caller's number was shown to a person, once.
    NUMBER_SHOWN = "number_shown"
    #: A person asked Rapport to call the caller back.
    AGENT_CALLBACK_REQUESTED = "agent_callback_requested"


class AuditEntry(BaseModel):
    """One change: who, when, what, and which caller (masked) and record it touched."""

    by: str
    action: AuditAction
    at: float = Field(default_factory=lambda: to_ms(now()))
    caller: str | None = None
    call_id: str | None = None
    fact_id: str | None = None


class AuditLog:
    """An agent's audit list in Redis.

    Args:
        redis: An asyncio client.
        prefix: The store's key prefix.
    """

    def __init__(self, redis: Redis, *, prefix: str = "rapport") -> None:
        self._redis = redis
        self._keys = KeyLayout(prefix)

    def key(self, agent_id: str) -> str:
        """The agent's audit list."""
        return self._keys.agent(agent_id, "audit")

    async def record(self, agent_id: str, entry: AuditEntry) -> None:
        """Add one entry (newest first), dropping the oldest beyond :data:`MAX_ENTRIES`."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.lpush(self.key(agent_id), entry.model_dump_json(exclude_none=True))
        pipe.ltrim(self.key(agent_id), 0, MAX_ENTRIES - 1)
        await redis_reply(pipe.execute())

    async def recent(self, agent_id: str, *, limit: int = 100) -> list[AuditEntry]:
        """The newest entries, newest first (entries that fail validation are skipped)."""
        raws = await redis_reply(self._redis.lrange(self.key(agent_id), 0, limit - 1))
        entries = []
        for raw in raws:
            try:
                entries.append(AuditEntry.model_validate_json(raw))
            except ValidationError:
                continue
        return entries
