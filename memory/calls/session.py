"""One call that runs outside Pipecat: a hosted voice platform asks Rapport for its memory.

Vapi's custom LLM, the HTTP API for webhook platforms and anything else that is not the
Pipecat bot take a call through here, so it is remembered exactly as a bot call is:

- the caller is identified (:meth:`memory.runtime.MemoryRuntime.identify`); an anonymous caller
  is never recorded, and an unverified one gets memory only when the agent's policy allows it
  (``RAPPORT_UNVERIFIED_CALLERS``, the bot's rule in ``bot.pipeline.prepare_call``);
- memory is loaded once, within a budget (a slow or dead Redis means "no memory", not an error),
  from the caller's call-start digest when it is current
  (:func:`memory.recall.call_start.load_call_start`, as the bot does);
- the facts for the call start are chosen by :func:`memory.recall.ranking.call_start_facts`
  and rendered by :func:`memory.recall.render.render_memory`, the same functions the bot's
  ``MemoryContextProcessor`` uses, so a platform's prompt holds the same block the bot's would;
- turns are recorded and the call is closed and queued for analysis by a
  :class:`memory.calls.recorder.CallRecorder` (which calls :func:`memory.calls.closing.end_call`).

A platform's requests for one call may reach any process. :class:`SharedCalls` keeps in Redis
what a request needs (the call's identity and trust, its language and start, whether it ended,
and the memory block it started with), so another process resumes the call as it was: the same
prompt, turns recorded into the same transcript, the call closed and analysed once.
:class:`SessionCache` keeps the open calls of one process between requests, in front of it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from loguru import logger
from pydantic import BaseModel, ValidationError

from memory.backend.reply import redis_reply
from memory.calls.policy import CallPolicy, remembered_caller
from memory.calls.recorder import CallRecorder
from memory.errors import MemoryUnavailableError
from memory.language import primary_language
from memory.models import CallerMemory, CallTrust, Fact, now
from memory.privacy.identity import CallerIdentity
from memory.recall.call_start import call_start_spec, load_call_start
from memory.recall.embeddings import Embedder
from memory.recall.ranking import call_start_facts
from memory.recall.render import fill_template, render_memory
from memory.runtime import MemoryRuntime
from memory.store.digest import CallStartSpec
from memory.store.keys import KeyLayout
from memory.store.queue import AnalysisQueue

#: How long closing a call may take before the platform gets its answer (the recorder goes on).
END_TIMEOUT_S = 5.0
#: How long an open platform call is kept in Redis after its last request.
SHARED_CALL_TTL_S = 2 * 3600

_V = TypeVar("_V")


@dataclass(slots=True)
class CallSession:
    """One call of a platform: who called, what Rapport remembers, and its recorder.

    Attributes:
        call_id: The id the call is stored under.
        trust: How far the caller id is believed.
        caller: The caller; None when anonymous, or unverified and not served (nothing is then
            read or recorded).
        memory: The memory the call started with (None: none, or not loaded in time).
        facts: The facts chosen for the call start.
        language: The call's language (the caller's stored one, when the agent speaks it).
        recorder: Records the call; None when nothing is recorded.
        token_budget: Estimated tokens the memory block may take.
        started_at: When the call began (epoch), kept by every process that serves it.
    """

    call_id: str
    trust: CallTrust
    caller: CallerIdentity | None = None
    memory: CallerMemory | None = None
    facts: list[Fact] = field(default_factory=list)
    language: str = "en"
    recorder: CallRecorder | None = None
    token_budget: int = 400
    started_at: float = field(default_factory=now)
    _ended: bool = False
    _block: str | None = None

    @property
    def remembered(self) -> bool:
        """Whether this call reads and writes the caller's memory."""
        return self.caller is not None

    @property
    def memory_block(self) -> str:
        """The framed, escaped memory section for the system prompt ("" when there is none).

        Rendered once: the call's memory does not change while it lasts.
        """
        if self._block is None:
            self._block = render_memory(self.memory, self.facts, token_budget=self.token_budget)
        return self._block

    def system_prompt(self, template: str) -> str:
        """``template`` with the memory block in place of ``{{memory}}``."""
        return fill_template(template, self.memory_block)

    async def add_turns(
        self,
        turns: Sequence[tuple[Literal["user", "assistant"], str]],
        *,
        timeout_s: float = END_TIMEOUT_S,
    ) -> None:
        """Record finished turns and wait (up to ``timeout_s``) until they are stored.

        The platform is answered only then, so a process that dies after answering has lost no
        turn. No-op when the call is not recorded or has ended.
        """
        if self.recorder is None or self._ended:
            return
        for role, text in turns:
            self.recorder.add_turn(role, text)
        try:
            async with asyncio.timeout(timeout_s):
                await self.recorder.wait_closed()
        except TimeoutError:
            logger.warning("Turns of call {} are still being stored", self.call_id)

    @property
    def ended(self) -> bool:
        """Whether the call has ended (here, or in another process)."""
        return self._ended

    def ended_elsewhere(self) -> None:
        """Note that another process ended the call: nothing more is recorded here."""
        self._ended = True

    async def end(self, reason: str, *, timeout_s: float = END_TIMEOUT_S) -> None:
        """Close the call and queue it for analysis, once; waits up to ``timeout_s`` for it.

        Leaving early only stops the wait: the recorder finishes (and the process drains it at
        shutdown, see :meth:`memory.calls.recorder.CallRecorder.drain_all`).
        """
        if self._ended:
            return
        self._ended = True
        if self.recorder is None:
            return
        self.recorder.finish(reason, language=self.language)
        try:
            async with asyncio.timeout(timeout_s):
                await self.recorder.wait_closed()
        except TimeoutError:
            logger.warning("Call {} is still being closed; the recorder goes on", self.call_id)


async def open_call(
    *,
    runtime: MemoryRuntime | None,
    queue: AnalysisQueue | None,
    number: str | None,
    call_id: str,
    trust: CallTrust,
    policy: CallPolicy,
    door: str,
    embedder: Embedder | None = None,
) -> CallSession:
    """Identify the caller of a platform's call, load their memory once, and set up recording.

    Args:
        runtime: The process's memory (None: memory off or unavailable).
        queue: The analysis queue (None: memory off).
        number: The caller id the platform reported (raw; it is never logged or stored).
        call_id: The id the call is stored under.
        trust: How far the platform's caller id can be believed (``anonymous`` is derived
            here from the number).
        policy: The agent and its memory settings.
        door: Which platform the call came through, for logs (``vapi``, ``api``).
        embedder: Adds dense relevance to the choice of facts.
    """
    session = CallSession(
        call_id=call_id,
        trust=trust,
        language=policy.default_language,
        token_budget=policy.token_budget,
    )
    if runtime is None:
        return session
    caller = remembered_caller(
        runtime,
        number,
        agent_id=policy.agent_id,
        trust=trust,
        serve_unverified=policy.serve_unverified,
        door=door,
    )
    if caller is None:
        # Refused for its trust, or no usable number at all: only the latter is anonymous.
        if runtime.identify(number, agent_id=policy.agent_id) is None:
            session.trust = CallTrust.ANONYMOUS
        return session
    session.caller = caller
    if queue is not None:
        session.recorder = CallRecorder(
            store=runtime.store,
            queue=queue,
            caller=caller,
            call_id=call_id,
            trust=trust,
            started_at=session.started_at,
            sealed_number=runtime.sealed_number(number, caller),
        )
    spec = call_start_spec(
        purpose=policy.purpose,
        token_budget=policy.token_budget,
        max_facts=policy.max_facts,
        embedder=embedder,
    )
    session.memory = await _load(runtime, caller, spec, policy.load_budget_s)
    if session.memory is not None and not session.memory.is_empty:
        session.facts = await asyncio.to_thread(
            call_start_facts,
            session.memory,
            purpose=policy.purpose,
            token_budget=policy.token_budget,
            max_facts=policy.max_facts,
            embedder=embedder,
        )
        language = primary_language(session.memory.profile.language or "")
        if language in policy.languages:
            session.language = language
    return session


async def _load(
    runtime: MemoryRuntime, caller: CallerIdentity, spec: CallStartSpec | None, budget_s: float
) -> CallerMemory | None:
    """The call start's memory for ``spec``; with none, the whole memory (no facts are chosen)."""
    try:
        async with asyncio.timeout(budget_s):
            if spec is None:
                return await runtime.store.load(caller)
            return await load_call_start(runtime.store, caller, spec)
    except TimeoutError:
        logger.warning("Memory of {} was not ready within the load budget", caller.masked)
    except MemoryUnavailableError:
        logger.warning("Memory unavailable for the call of {}; going on without", caller.masked)
    return None


class SharedCallState(BaseModel):
    """An open platform call as Redis keeps it: no memory content, no number.

    Attributes:
        agent_id: The business line called ("" when the call is not remembered).
        caller_key: The caller's keyed hash; None when the call is not remembered.
        masked: The caller's masked number (for logs); None when not remembered.
        trust: How far the caller id is believed.
        language: The call's language.
        started_at: When the call began (epoch).
        ended: Whether the call has ended.
    """

    agent_id: str = ""
    caller_key: str | None = None
    masked: str | None = None
    trust: CallTrust
    language: str
    started_at: float
    ended: bool = False


class SharedCalls:
    """The open platform calls of every process, in Redis: any process serves any request.

    The call is kept under its door and id (``{prefix}:platform-call:<door>:<id>``) and the
    memory block it started with in the caller's ``platform`` hash, so a forget removes the
    block with the rest of the caller. Both expire ``ttl_s`` after the call's last save. A
    Redis that does not answer leaves each process with the calls it has (logged).

    Args:
        runtime: The process's memory.
        queue: Where a resumed call's close is queued (None: memory off, nothing recorded).
        ttl_s: How long a call is kept after its last save.
    """

    def __init__(
        self,
        runtime: MemoryRuntime,
        queue: AnalysisQueue | None,
        *,
        ttl_s: float = SHARED_CALL_TTL_S,
    ) -> None:
        self._runtime = runtime
        self._redis = runtime.redis
        self._queue = queue
        self._keys = KeyLayout(runtime.settings.key_prefix)
        self._ttl_ms = int(ttl_s * 1000)

    async def save(self, door: str, session: CallSession) -> None:
        """Keep the call, as it stands, for the other processes."""
        caller = session.caller
        state = SharedCallState(
            agent_id=caller.agent_id if caller else "",
            caller_key=caller.key if caller else None,
            masked=caller.masked if caller else None,
            trust=session.trust,
            language=session.language,
            started_at=session.started_at,
            ended=session.ended,
        )
        pipe = self._redis.pipeline(transaction=False)
        if caller is not None:
            blocks = self._keys.caller(caller, "platform")
            field_name = f"{door}:{session.call_id}"
            if session.ended:
                pipe.hdel(blocks, field_name)
            else:
                pipe.hset(blocks, field_name, session.memory_block)
                pipe.pexpire(blocks, self._ttl_ms)
        key = self._keys.platform_call(door, session.call_id)
        pipe.set(key, state.model_dump_json(), px=self._ttl_ms)
        try:
            await redis_reply(pipe.execute())
        except MemoryUnavailableError:
            logger.warning("Call {} is served by this process only (Redis)", session.call_id)

    async def state(self, door: str, call_id: str) -> SharedCallState | None:
        """The call as Redis keeps it; None when unknown, or Redis did not answer."""
        try:
            raw = await redis_reply(self._redis.get(self._keys.platform_call(door, call_id)))
        except MemoryUnavailableError:
            logger.warning("Could not look up call {} in Redis", call_id)
            return None
        if raw is None:
            return None
        try:
            return SharedCallState.model_validate_json(raw)
        except ValidationError:
            logger.warning("The stored state of call {} is unreadable", call_id)
            return None

    async def resume(
        self, door: str, call_id: str, state: SharedCallState, *, policy: CallPolicy
    ) -> CallSession:
        """The call another process opened, as it stands: its prompt, recorder and memory.

        The memory block is the one the call started with (empty if the caller was forgotten
        since); the caller's memory is loaded again only for what the start answer shows
        (whether they called before, their opening line).
        """
        session = CallSession(
            call_id=call_id,
            trust=state.trust,
            language=state.language,
            token_budget=policy.token_budget,
            started_at=state.started_at,
            _ended=state.ended,
        )
        if state.caller_key is None:
            session._block = ""
            return session
        caller = CallerIdentity(
            agent_id=state.agent_id, key=state.caller_key, masked=state.masked or ""
        )
        session.caller = caller
        blocks = self._keys.caller(caller, "platform")
        try:
            block = await redis_reply(self._redis.hget(blocks, f"{door}:{call_id}"))
        except MemoryUnavailableError:
            block = None
        session._block = block.decode() if block is not None else ""
        if self._queue is not None:
            session.recorder = CallRecorder(
                store=self._runtime.store,
                queue=self._queue,
                caller=caller,
                call_id=call_id,
                trust=state.trust,
                started_at=state.started_at,
            )
        session.memory = await _load(self._runtime, caller, None, policy.load_budget_s)
        return session


class SessionCache(Generic[_V]):
    """The open calls of one process, by call id: bounded, each forgotten after ``ttl_s`` idle.

    Args:
        max_entries: Most calls kept; the least recently used goes first.
        ttl_s: How long a call is kept after its last use.
        clock: Monotonic seconds (tests move it).
    """

    def __init__(
        self,
        *,
        max_entries: int = 2048,
        ttl_s: float = 2 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[str, tuple[float, _V]] = OrderedDict()
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> _V | None:
        """The value kept under ``key`` (its idle time starts again), or None."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now - entry[0] > self._ttl_s:
            del self._entries[key]
            return None
        self._entries[key] = (now, entry[1])
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, value: _V) -> None:
        """Keep ``value`` under ``key``; drops expired and, over the bound, the oldest entries."""
        now = self._clock()
        self._entries[key] = (now, value)
        self._entries.move_to_end(key)
        while self._entries:
            oldest, (used, _) = next(iter(self._entries.items()))
            if len(self._entries) <= self._max_entries and now - used <= self._ttl_s:
                break
            del self._entries[oldest]

    def pop(self, key: str) -> _V | None:
        """Remove and return the value under ``key`` (None when absent or expired)."""
        value = self.get(key)
        self._entries.pop(key, None)
        return value
