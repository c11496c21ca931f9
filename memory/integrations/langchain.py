"""A LangChain chat history over a caller's recent turns (the ``rapport[langchain]`` extra).

``RunnableWithMessageHistory`` keeps a conversation's history per caller with Rapport's memory:
the history is the caller's recent turns for one agent (the same scope, retention and cap the
bot loads at call start), and what a chain adds is scrubbed and stored as turns of a call, as
the bot's recorder stores them. A conversation left idle is closed and analysed by the worker's
sweeper like a call whose bot went away, so its summary and facts reach the next call too.

    histories = CallerHistories(runtime, agent_id="bakery")
    chain = RunnableWithMessageHistory(
        model, histories, history_factory_config=histories.config_specs
    )
    await chain.ainvoke(
        "Hi", config={"configurable": {"caller_number": "+14155550123", "call_id": "chat-1"}}
    )

The history is asynchronous only (``ainvoke``/``astream``): the store is asyncio Redis. An
anonymous caller (no usable number) gets an empty history and nothing is stored. The number is
never logged; keep it out of tracing metadata too (LangSmith records ``configurable``).
``aclear`` forgets the caller entirely (Rapport's one deletion: profile, facts, calls, turns).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import ConfigurableFieldSpec

from memory.models import Turn, clean_text
from memory.privacy.identity import CallerIdentity
from memory.privacy.scrub import scrub
from memory.runtime import MemoryRuntime
from memory.store.callers import MemoryStore

_SYNC = "Rapport's chat history is asynchronous: use ainvoke/astream (or the a* methods)"


class RapportChatMessageHistory(BaseChatMessageHistory):
    """One caller's recent turns with one agent, as LangChain messages.

    Args:
        store: The memory store.
        caller: The caller; None when anonymous (an empty history that stores nothing).
        call_id: The call (conversation) the added turns belong to.
    """

    def __init__(self, *, store: MemoryStore, caller: CallerIdentity | None, call_id: str) -> None:
        super().__init__()
        self._store = store
        self._caller = caller
        self._call_id = call_id
        self._loaded: list[BaseMessage] | None = None

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Not available synchronously (see :meth:`aget_messages`)."""
        raise NotImplementedError(_SYNC)

    async def aget_messages(self) -> list[BaseMessage]:
        """The caller's recent turns within retention, oldest first (loaded once)."""
        if self._caller is None:
            return []
        if self._loaded is None:
            memory = await self._store.load(self._caller)
            self._loaded = [
                HumanMessage(content=turn.text) if turn.role == "user" else AIMessage(turn.text)
                for turn in memory.recent_turns
            ]
        return list(self._loaded)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Not available synchronously (see :meth:`aadd_messages`)."""
        raise NotImplementedError(_SYNC)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store the caller's and the agent's messages as turns (scrubbed; others skipped)."""
        if self._caller is None:
            return
        turns = [
            Turn(role=role, text=text, call_id=self._call_id)
            for message in messages
            if (role := _role(message)) is not None
            if (text := clean_text(scrub(message.text)))
        ]
        if not turns:
            return
        await self._store.append_turns(self._caller, turns)
        if self._loaded is not None:
            self._loaded += [
                HumanMessage(content=t.text) if t.role == "user" else AIMessage(t.text)
                for t in turns
            ]

    def clear(self) -> None:
        """Not available synchronously (see :meth:`aclear`)."""
        raise NotImplementedError(_SYNC)

    async def aclear(self) -> None:
        """Forget the caller: everything stored about them with this agent goes."""
        if self._caller is not None:
            await self._store.forget(self._caller)
        self._loaded = []


def _role(message: BaseMessage) -> Literal["user", "assistant"] | None:
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage) and not message.tool_calls:
        return "assistant"
    return None


class CallerHistories:
    """``get_session_history`` for ``RunnableWithMessageHistory``: by caller number and call.

    Pass :attr:`config_specs` as ``history_factory_config``; each invocation then names
    ``caller_number`` and ``call_id`` in its ``configurable``.

    Args:
        runtime: The process's memory (store and pepper).
        agent_id: The business line the conversations are with.
    """

    def __init__(self, runtime: MemoryRuntime, *, agent_id: str) -> None:
        self._runtime = runtime
        self._agent_id = agent_id

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        """The two fields each invocation names."""
        return [
            ConfigurableFieldSpec(
                id="caller_number",
                annotation=str,
                name="Caller number",
                description="The caller id (E.164); withheld or invalid: anonymous.",
                default="",
                is_shared=True,
            ),
            ConfigurableFieldSpec(
                id="call_id",
                annotation=str,
                name="Call id",
                description="The conversation the new turns belong to.",
                default="",
                is_shared=True,
            ),
        ]

    def __call__(self, caller_number: str, call_id: str) -> RapportChatMessageHistory:
        """The history of one caller's conversation."""
        if not call_id:
            raise ValueError("each conversation needs a call_id")
        caller = self._runtime.identify(caller_number or None, agent_id=self._agent_id)
        return RapportChatMessageHistory(store=self._runtime.store, caller=caller, call_id=call_id)
