"""The Redis key layout and the formats of index members, for the store and the queue.

Every key starts with a prefix (``rapport`` unless configured; tests use one per test) and
carries a hash tag, so each multi-key step runs atomically on Redis Cluster too:

- ``{prefix}:{agent:callerkey}:<part>``: one caller's memory, every part under one tag:
  ``profile`` (hash), ``facts`` (hash of JSON by fact id), ``emb`` (hash of embeddings by fact
  id), ``calls`` (sorted set of call ids by time), ``callstate`` (hash: call id -> ``closed`` or
  ``analysed``), ``turns`` (list: recent turns), ``kv`` (hash of JSON values), ``done`` (hash:
  call id -> who marked its follow-up done, and when), ``platform`` (hash: an open platform
  call -> the memory block it started with, see :mod:`memory.calls.session`), ``digest`` (what
  the next call start needs, ready-made: see :mod:`memory.store.digest`), ``contact`` (hash:
  ``number``, the caller's number sealed for calling back, see :mod:`memory.privacy.numbers`),
  ``callbacks`` (hash: call id -> the agent's call back of that follow-up, see
  :mod:`memory.store.callbacks`), and per call
  ``call:<id>`` (the record, JSON) and ``call:<id>:turns`` (list: the transcript).
- ``{prefix}:{agent:<agent id>}:<part>``: agent-wide indexes, ``callers`` (caller keys by last
  call), ``calls`` and ``open`` (calls ended, and calls with turns but no end, by time),
  ``followups`` and its companions (see :mod:`memory.store.followup_index`), ``audit`` (the
  dashboard's changes, see :mod:`memory.store.audit`), ``callstart`` (how the agent's call
  start chooses facts, for the worker that builds digests), ``staff_phones`` (the dashboard
  users' own phones, sealed) and ``callbacks_due`` (agent call backs waiting, by when they are
  due). Members of the call indexes are
  ``callerkey|callid``.
- ``{prefix}:platform-call:<door>:<call id>``: an open platform call (JSON, no memory content),
  read by whichever process serves its next request.
- ``{prefix}:{queue}:analysis`` and its ``:dead``, ``:queued``, ``:closing`` and ``:sweep``
  companions: the analysis queue (see :mod:`memory.store.queue`); ``:embed`` and ``:digest``:
  callers whose fact vectors, and call-start digests, the worker is asked to bring up to date.
  Members of ``:queued`` and ``:closing`` are ``agent|callerkey|callid``.

Agent ids and caller keys hold no ``|`` (see :mod:`memory.privacy.identity`); a call id may, so
it is always the last field of a member.
"""

from __future__ import annotations

from dataclasses import dataclass

from memory.privacy.identity import CallerIdentity

#: The parts of one caller's memory that are not per call.
CALLER_PARTS = (
    "profile",
    "facts",
    "emb",
    "calls",
    "callstate",
    "turns",
    "kv",
    "done",
    "platform",
    "digest",
    "contact",
    "callbacks",
)
_SEPARATOR = "|"


@dataclass(frozen=True, slots=True)
class CallRef:
    """Where a call is stored: its caller (key and masked number) and id."""

    agent_id: str
    caller_key: str
    call_id: str
    masked: str = ""

    @property
    def caller(self) -> CallerIdentity:
        """The caller identity the call belongs to."""
        return CallerIdentity(agent_id=self.agent_id, key=self.caller_key, masked=self.masked)


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """The keys under one prefix.

    Args:
        prefix: First segment of every key.
    """

    prefix: str = "rapport"

    # -- one caller --------------------------------------------------------------------------

    def caller(self, caller: CallerIdentity, part: str) -> str:
        """The key of one part (``profile``, ``facts``, …) of a caller's memory."""
        return f"{self.prefix}:{{{caller.hash_tag}}}:{part}"

    def caller_keys(self, caller: CallerIdentity) -> dict[str, str]:
        """Every key of a caller that is not per call, by part."""
        return {part: self.caller(caller, part) for part in CALLER_PARTS}

    def call(self, caller: CallerIdentity, call_id: str) -> tuple[str, str]:
        """The keys of one call: its record and its transcript."""
        record_key = self.caller(caller, f"call:{call_id}")
        return record_key, f"{record_key}:turns"

    def platform_call(self, door: str, call_id: str) -> str:
        """The key of an open platform call (``door``: ``vapi``, ``api``)."""
        return f"{self.prefix}:platform-call:{door}:{call_id}"

    # -- one agent ---------------------------------------------------------------------------

    def agent(self, agent_id: str, part: str) -> str:
        """The key of an agent-wide index (``callers``, ``calls``, ``open``)."""
        return f"{self.prefix}:{{agent:{agent_id}}}:{part}"

    def agent_pattern(self, part: str) -> tuple[str, str]:
        """A ``MATCH`` pattern for one index of every agent, and the text before the agent id."""
        head = f"{self.prefix}:{{agent:"
        return glob_escaped(head) + "*" + glob_escaped(f"}}:{part}"), head

    # -- the analysis queue ------------------------------------------------------------------

    @property
    def queue(self) -> str:
        """The stream of analysis jobs; its companions are ``f"{queue}:<part>"``."""
        return f"{self.prefix}:{{queue}}:analysis"


def agent_call_member(caller_key: str, call_id: str) -> str:
    """A call in an agent-wide index."""
    return f"{caller_key}{_SEPARATOR}{call_id}"


def agent_call_ref(agent_id: str, member: bytes) -> CallRef:
    """The call an agent-wide index member names."""
    caller_key, _, call_id = member.decode().partition(_SEPARATOR)
    return CallRef(agent_id=agent_id, caller_key=caller_key, call_id=call_id)


def queue_member(agent_id: str, caller_key: str, call_id: str) -> str:
    """A call in the queue's ``queued`` and ``closing`` sets."""
    return _SEPARATOR.join((agent_id, caller_key, call_id))


def queue_ref(member: bytes) -> CallRef:
    """The call a queue member names."""
    agent_id, caller_key, call_id = member.decode().split(_SEPARATOR, 2)
    return CallRef(agent_id=agent_id, caller_key=caller_key, call_id=call_id)


def glob_escaped(text: str) -> str:
    """``text`` as a literal in a Redis ``MATCH`` pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
