"""The LangChain chat history: RunnableWithMessageHistory keeps a caller's turns across calls.

A fake chat model (``FakeListChatModel``) stands in for the LLM; what it is given is recorded
on the way in. The store is the real one, on the session's Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from memory.integrations.langchain import CallerHistories
from memory.runtime import MemoryRuntime, open_memory
from memory.settings import MemorySettings
from tests.support.values import PEPPER

ANA = "+34 612 345 678"
OTHER = "+34 612 345 699"


@pytest.fixture
async def runtime(redis_url: str, key_prefix: str) -> AsyncIterator[MemoryRuntime]:
    settings = MemorySettings(
        REDIS_URL=redis_url, RAPPORT_PEPPER=PEPPER, RAPPORT_KEY_PREFIX=key_prefix
    )
    memory = await open_memory(settings)
    try:
        yield memory
    finally:
        await memory.aclose()


class Chat:
    """A chain with Rapport's history; ``seen`` is what the model was given each turn."""

    def __init__(self, runtime: MemoryRuntime, agent_id: str) -> None:
        self.seen: list[list[tuple[str, str]]] = []
        model = FakeListChatModel(responses=["Hello Ana!", "Welcome back!", "Hi!", "Hi!", "Hi!"])
        histories = CallerHistories(runtime, agent_id=agent_id)
        self.chain = RunnableWithMessageHistory(
            RunnableLambda(self._record) | model,
            histories,
            history_factory_config=histories.config_specs,
        )

    def _record(self, messages: list[BaseMessage]) -> list[BaseMessage]:
        self.seen.append([(m.type, m.text) for m in messages])
        return messages

    async def say(self, text: str, *, number: str, call_id: str) -> Any:
        config: Any = {"configurable": {"caller_number": number, "call_id": call_id}}
        return await self.chain.ainvoke([HumanMessage(text)], config=config)


async def test_history_follows_one_caller_across_calls_and_no_further(
    runtime: MemoryRuntime,
) -> None:
    bakery = Chat(runtime, "bakery")
    reply = await bakery.say("Hi, I'm Ana. Card 4111 1111 1111 1111.", number=ANA, call_id="c1")
    assert isinstance(reply, AIMessage) and reply.text == "Hello Ana!"
    assert bakery.seen[-1] == [("human", "Hi, I'm Ana. Card 4111 1111 1111 1111.")]

    await bakery.say("Do you remember me?", number=ANA, call_id="c2")
    assert bakery.seen[-1] == [
        ("human", "Hi, I'm Ana. Card [card]."),  # stored scrubbed, as the bot's recorder does
        ("ai", "Hello Ana!"),
        ("human", "Do you remember me?"),
    ]

    # Another number on the same line, the same number on another line: no history.
    await bakery.say("Hello?", number=OTHER, call_id="c3")
    assert bakery.seen[-1] == [("human", "Hello?")]
    florist = Chat(runtime, "florist")
    await florist.say("Hello?", number=ANA, call_id="c4")
    assert florist.seen[-1] == [("human", "Hello?")]

    # Anonymous callers are never recorded.
    for _ in range(2):
        await bakery.say("It's me.", number="anonymous", call_id="c5")
        assert bakery.seen[-1] == [("human", "It's me.")]

    # Forgetting removes everything.
    histories = CallerHistories(runtime, agent_id="bakery")
    history = histories(ANA, "c6")
    assert len(await history.aget_messages()) == 4
    await history.aclear()
    assert await histories(ANA, "c7").aget_messages() == []


async def test_the_history_is_asynchronous_only(runtime: MemoryRuntime) -> None:
    history = CallerHistories(runtime, agent_id="bakery")(ANA, "c1")
    with pytest.raises(NotImplementedError, match="asynchronous"):
        _ = history.messages
