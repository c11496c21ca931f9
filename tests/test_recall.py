"""TurnRecall without Pipecat: what a turn brings up from the caller's memory, within budget."""

from __future__ import annotations

import time

import numpy as np

from memory.models import CallerMemory, CallerProfile, Fact
from memory.recall.turns import MAX_RECALLED, MemoryStats, TurnRecall

REX = Fact(text="Caller's dog Rex is afraid of the vacuum", confidence=0.8)
DIET = Fact(text="Caller is vegetarian", confidence=0.9)


def memory(*facts: Fact) -> CallerMemory:
    return CallerMemory(profile=CallerProfile(call_count=1), facts=list(facts))


async def test_a_turn_brings_up_a_memory_not_yet_in_the_prompt_once() -> None:
    stats = MemoryStats()
    recall = TurnRecall(budget_s=0.015, embedder=None, stats=stats)
    assert not recall.ready and not await recall.recall("my dog Rex")
    await recall.build(memory(REX, DIET), in_prompt={DIET.id})
    assert await recall.recall("Can you keep my dog Rex calm?")
    assert recall.recalled == [REX.text]
    assert not await recall.recall("Rex again, please")  # already in the prompt now
    assert not await recall.recall("I am vegetarian")  # in the prompt from the start
    assert len(stats.recall_s) == 3


async def test_recalled_memories_stay_few() -> None:
    facts = [Fact(text=f"Caller's parrot number {i} is called Polly{i}") for i in range(20)]
    recall = TurnRecall(budget_s=0.015, embedder=None, stats=MemoryStats())
    await recall.build(memory(*facts), in_prompt=set())
    for _ in range(10):
        await recall.recall("tell me about the parrot Polly")
    assert len(recall.recalled) == MAX_RECALLED


class SlowEmbedder:
    name, dim = "slow", 4

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), self.dim), dtype=np.float32)

    def embed_query(self, texts: list[str]) -> np.ndarray:
        time.sleep(0.05)
        return self.embed(texts)


async def test_dense_recall_over_the_budget_is_skipped_and_counted() -> None:
    stats = MemoryStats()
    recall = TurnRecall(budget_s=0.01, embedder=SlowEmbedder(), stats=stats)  # type: ignore[arg-type]
    await recall.build(memory(REX), in_prompt=set())
    await recall.recall("something about the vacuum")
    await recall.recall("and the dog")
    assert stats.dense_skipped == 2
