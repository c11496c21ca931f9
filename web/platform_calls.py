"""What the platform endpoints share: the agent's settings, the process's memory and LLM client.

The bot process opens memory and the Anthropic client when its server starts (after the routes
are mounted), so both are reached through callables, read on each request. Every call opened
here is kept in Redis too (:class:`memory.calls.session.SharedCalls`), so a request of the call
that reaches another process finds it (:meth:`PlatformCalls.find`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from anthropic import AsyncAnthropic

from bot.settings import BotSettings
from bot.tools import CallerTools
from bot.trust import UnverifiedCallers
from bot.wording import with_hours
from memory.calls.policy import CallPolicy
from memory.calls.session import CallSession, SharedCalls, open_call
from memory.metrics import CALLS
from memory.models import CallTrust, is_service_failure
from memory.runtime import MemoryAccess


@dataclass(slots=True)
class PlatformCalls:
    """How the platform endpoints take a call.

    Attributes:
        settings: The agent, its memory settings and the endpoints' secrets.
        prompt_template: The system prompt template, ``{{memory}}`` and ``{{hours}}`` still in
            it (see :attr:`template`).
        memory: The process's memory (None: off or unavailable).
        anthropic: The process's Anthropic client.
    """

    settings: BotSettings
    prompt_template: str
    memory: Callable[[], MemoryAccess | None]
    anthropic: Callable[[], AsyncAnthropic]

    @property
    def template(self) -> str:
        """The template with the business hours as they stand now, as a bot call gets it."""
        return with_hours(self.prompt_template, self.settings.business_hours, datetime.now(UTC))

    def policy(self, agent_id: str | None = None) -> CallPolicy:
        """The memory policy of calls to ``agent_id`` (default: the process's agent)."""
        settings = self.settings
        return CallPolicy(
            agent_id=agent_id or settings.agent_id,
            serve_unverified=settings.unverified_callers == UnverifiedCallers.FULL,
            purpose=settings.agent_purpose,
            token_budget=settings.memory_token_budget,
            max_facts=settings.max_facts,
            load_budget_s=settings.memory_load_budget_ms / 1000,
            default_language=settings.default_language,
            languages=tuple(settings.voices),
        )

    async def open(
        self,
        number: str | None,
        *,
        call_id: str,
        trust: CallTrust,
        door: str,
        agent_id: str | None = None,
    ) -> CallSession:
        """Identify the caller and load their memory, as the bot does at ring time.

        The call is kept for the other processes (``door``: which platform, ``vapi``, ``api``).
        """
        memory = self.memory() if self.settings.memory_enabled else None
        session = await open_call(
            runtime=memory.runtime if memory is not None else None,
            queue=memory.queue if memory is not None else None,
            number=number,
            call_id=call_id,
            trust=trust,
            policy=self.policy(agent_id),
            door=door,
            embedder=memory.embedder if memory is not None else None,
        )
        if (shared := self._shared()) is not None:
            await shared.save(door, session)
        return session

    async def find(
        self, door: str, call_id: str, cached: CallSession | None = None
    ) -> CallSession | None:
        """The call as every process knows it; None when none does.

        Args:
            door: Which platform the call came through.
            call_id: The call's id.
            cached: This process's session of the call, if it has one: returned as it is,
                noted ended when another process ended the call.
        """
        shared = self._shared()
        state = await shared.state(door, call_id) if shared is not None else None
        if shared is None or state is None:
            return cached
        if cached is None:
            policy = self.policy(state.agent_id or None)
            return await shared.resume(door, call_id, state, policy=policy)
        if state.ended:
            cached.ended_elsewhere()
        return cached

    async def end(self, session: CallSession, reason: str, *, door: str) -> None:
        """Close the call and queue it for analysis (once), and tell the other processes.

        The call counts in ``rapport_calls_total`` (``transport``: the door; ``outcome``:
        ``error`` when a service failed it, see :func:`memory.models.service_failed`).
        """
        if not session.ended:
            outcome = "error" if is_service_failure(reason) else "ended"
            CALLS.labels(transport=door, trust=session.trust.value, outcome=outcome).inc()
        await session.end(reason)
        if (shared := self._shared()) is not None:
            await shared.save(door, session)

    def _shared(self) -> SharedCalls | None:
        memory = self.memory() if self.settings.memory_enabled else None
        return SharedCalls(memory.runtime, memory.queue) if memory is not None else None

    def tools(self, session: CallSession) -> CallerTools:
        """The memory tools of one call (they write to the caller's memory at once)."""
        memory = self.memory()
        return CallerTools(
            store=memory.runtime.store if memory is not None else None,
            caller=session.caller,
            call_id=session.call_id,
            embedder=memory.embedder if memory is not None else None,
        )
