"""What the platform endpoints share: the agent's settings, the process's memory and LLM client.

The bot process opens memory and the Anthropic client when its server starts (after the routes
are mounted), so both are reached through callables, read on each request.
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
from memory.calls.session import CallSession, open_call
from memory.models import CallTrust
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
        """Identify the caller and load their memory, as the bot does at ring time."""
        memory = self.memory() if self.settings.memory_enabled else None
        return await open_call(
            runtime=memory.runtime if memory is not None else None,
            queue=memory.queue if memory is not None else None,
            number=number,
            call_id=call_id,
            trust=trust,
            policy=self.policy(agent_id),
            door=door,
            embedder=memory.embedder if memory is not None else None,
        )

    def tools(self, session: CallSession) -> CallerTools:
        """The memory tools of one call (they write to the caller's memory at once)."""
        memory = self.memory()
        return CallerTools(
            store=memory.runtime.store if memory is not None else None,
            caller=session.caller,
            call_id=session.call_id,
            embedder=memory.embedder if memory is not None else None,
        )
