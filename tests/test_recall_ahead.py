"""Dense recall that arrives: the caller's words are embedded while they are still speaking.

The embedder here knows two topics (bees, music), so what a turn recalls shows which vector it
was searched with: the words the caller ended up saying, or stale ones. It can be held in its
thread (a gate) to stand for an embedding that does not arrive in time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from pipecat.frames.frames import (
    Frame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMUpdateSettingsFrame,
    TranscriptionFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from bot.text_line import TextSTT
from memory.models import CallerMemory, CallerProfile, Fact
from memory.recall.embeddings import with_embeddings
from memory.recall.turns import MemoryStats, TurnRecall, embedded_words
from processors.memory_context import MemoryContextProcessor
from tests.support.polling import eventually

#: Generous: these tests are about which vector is used and whether a turn waits, not speed.
BUDGET_S = 5.0
BEES = "Caller keeps bees"
CELLO = "Caller plays the cello"
#: No word in common with either fact: only the dense half can recall one.
ABOUT_MUSIC = "Any news about the music"
ABOUT_INSECTS = "I love insects"


class TopicEmbedder:
    """Bees and insects on one axis, cellos and music on another; records what it embeds.

    ``gate``, when given, holds every query embedding until it is set.
    """

    name = "topics"
    dim = 3

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.queries: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self._topic(text) for text in texts], dtype=np.float32)

    def embed_query(self, texts: Sequence[str]) -> np.ndarray:
        self.queries.extend(texts)
        if self.gate is not None:
            self.gate.wait(30)
        return self.embed(texts)

    @staticmethod
    def _topic(text: str) -> list[float]:
        words = text.lower()
        if "bees" in words or "insects" in words:
            return [1.0, 0.0, 0.0]
        if "cello" in words or "music" in words:
            return [0.0, 1.0, 0.0]
        return [0.0, 0.0, 1.0]


def memory(embedder: TopicEmbedder) -> CallerMemory:
    facts = with_embeddings([Fact(text=BEES), Fact(text=CELLO)], embedder)
    return CallerMemory(profile=CallerProfile(call_count=1, language="en"), facts=facts)


async def recall_for(embedder: TopicEmbedder, *, budget_s: float = BUDGET_S) -> TurnRecall:
    recall = TurnRecall(budget_s=budget_s, embedder=embedder, stats=MemoryStats())
    await recall.build(memory(embedder), in_prompt=set())
    return recall


async def test_the_words_embedded_while_the_caller_spoke_serve_the_final_turn() -> None:
    embedder = TopicEmbedder()
    recall = await recall_for(embedder)
    recall.hear("Any news", final=False)
    recall.hear("Any news about the", final=False)
    recall.hear("Any news about the music", final=False)
    await eventually(lambda: not recall.embedding and len(embedder.queries) >= 2)
    embedded = list(embedder.queries)

    assert await recall.recall("Any news about the music?")  # the final, punctuated
    assert recall.recalled == [CELLO]
    assert embedder.queries == embedded  # nothing embedded on the turn's path
    assert embedder.queries[-1] == "Any news about the music"


async def test_a_stale_interim_is_never_used_for_the_turn() -> None:
    embedder = TopicEmbedder()
    recall = await recall_for(embedder)
    recall.hear(ABOUT_INSECTS, final=False)  # then the caller said something else
    await eventually(lambda: not recall.embedding and embedder.queries == [ABOUT_INSECTS])

    assert await recall.recall(ABOUT_MUSIC)
    assert recall.recalled == [CELLO]  # the insects' vector would have brought up the bees
    assert embedder.queries == [ABOUT_INSECTS, ABOUT_MUSIC]


async def test_one_embedding_at_a_time_and_only_the_latest_words_wait() -> None:
    gate = threading.Event()
    embedder = TopicEmbedder(gate)
    recall = await recall_for(embedder)
    for words in ("Any", "Any news", "Any news about", "Any news about the music"):
        recall.hear(words, final=False)
    await eventually(lambda: embedder.queries == ["Any"])  # one in flight, the rest waits
    gate.set()
    await eventually(lambda: not recall.embedding and len(embedder.queries) == 2)
    assert embedder.queries == ["Any", "Any news about the music"]  # the stale ones dropped


async def test_final_transcripts_of_one_turn_are_embedded_together() -> None:
    embedder = TopicEmbedder()
    recall = await recall_for(embedder)
    recall.hear("Any news", final=True)
    await eventually(lambda: not recall.embedding)
    recall.hear("about the music", final=False)
    await eventually(lambda: not recall.embedding and len(embedder.queries) == 2)
    assert embedder.queries[-1] == "Any news about the music"
    assert embedded_words(embedder.queries[-1]) == embedded_words("any news, about the MUSIC")


async def test_a_turn_does_not_wait_past_its_budget_for_an_embedding() -> None:
    gate = threading.Event()
    embedder = TopicEmbedder(gate)
    recall = await recall_for(embedder, budget_s=0.05)
    recall.hear(ABOUT_MUSIC, final=True)
    try:
        assert not await recall.recall(ABOUT_MUSIC)  # lexical only: nothing shares a word
        assert recall.embedding  # returned while the embedding is still held in its thread
        assert recall._stats.dense_skipped == 1 and recall._stats.dense_used == 0
    finally:
        gate.set()


async def recall_after_interims(interims: Sequence[str], gate: threading.Event) -> TurnRecall:
    """A recall that embedded each of ``interims`` in turn; ``gate`` then holds the next one."""
    gate.set()
    embedder = TopicEmbedder(gate)
    recall = await recall_for(embedder, budget_s=0.05)
    for words in interims:
        recall.hear(words, final=False)
        await eventually(
            lambda said=words: not recall.embedding and embedder.queries[-1:] == [said]
        )
    assert embedder.queries == list(interims)
    gate.clear()  # the final's own embedding will not arrive in time
    return recall


async def test_a_final_that_only_adds_a_word_is_searched_with_the_words_heard_so_far() -> None:
    gate = threading.Event()
    recall = await recall_after_interims([ABOUT_MUSIC], gate)
    try:
        recall.hear(f"{ABOUT_MUSIC} today", final=True)
        assert await recall.recall(f"{ABOUT_MUSIC} today")
        assert recall.recalled == [CELLO]
        stats = recall._stats
        assert (stats.dense_used, stats.dense_heard_so_far, stats.dense_skipped) == (0, 1, 0)
        # Words the caller did not say are not "heard so far": a revised last word is stale.
        assert not await recall.recall("Any news about the cinema")
        assert stats.dense_skipped == 1
    finally:
        gate.set()


async def test_a_final_that_changed_the_last_word_is_searched_with_the_words_before_it() -> None:
    gate = threading.Event()
    # The STT heard "bees"...
    recall = await recall_after_interims(["The music", "The music of bees"], gate)
    try:
        recall.hear("The music of bats", final=True)  # ...then settled on "bats"
        assert await recall.recall("The music of bats")
        # The words before the changed one stand in; the bees' interim, never said, does not.
        assert recall.recalled == [CELLO]
        stats = recall._stats
        assert (stats.dense_used, stats.dense_heard_so_far, stats.dense_skipped) == (0, 1, 0)
    finally:
        gate.set()


# -- through the processor: the STT's interim transcripts reach the recall -------------------


class HeldLLM(FrameProcessor):
    """Stands after the memory processor; notes whether the embedding was held at each turn."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self._gate = gate
        self.held_at_turn: list[bool] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self.held_at_turn.append(not self._gate.is_set())
        await self.push_frame(frame, direction)


def turn(text: str) -> LLMContextFrame:
    return LLMContextFrame(context=LLMContext(messages=[{"role": "user", "content": text}]))


def processor(embedder: TopicEmbedder, budget_s: float) -> MemoryContextProcessor:
    async def loaded() -> CallerMemory:
        return memory(embedder)

    return MemoryContextProcessor(
        memory=loaded(),
        prompt_template="You answer the phone.\n{{memory}}",
        opening=lambda _memory, _language: "Hello!",
        voices={"en": "en-US-AvaMultilingualNeural"},
        embedder=embedder,  # type: ignore[arg-type]
        params=MemoryContextProcessor.Params(max_facts=0, recall_budget_s=budget_s),
    )


async def test_the_processor_embeds_interim_transcripts_and_uses_them_for_the_turn() -> None:
    embedder = TopicEmbedder()
    stt, memory_context = TextSTT(), processor(embedder, BUDGET_S)
    memory_context.listen(stt)
    down, _ = await run_test(
        Pipeline([stt, memory_context]),
        frames_to_send=[
            SleepFrame(sleep=0.3),  # the call start and the recall index
            InterimTranscriptionFrame("Any news about the", "caller", "now"),
            InterimTranscriptionFrame(ABOUT_MUSIC, "caller", "now"),
            SleepFrame(sleep=0.3),  # the caller's pause before the final transcript
            TranscriptionFrame(ABOUT_MUSIC, "caller", "now"),
            turn(ABOUT_MUSIC),
        ],
    )
    assert embedder.queries[-1] == ABOUT_MUSIC and embedder.queries.count(ABOUT_MUSIC) == 1
    assert memory_context.stats.dense_used == 1
    turn_prompt = [f for f in down if isinstance(f, LLMUpdateSettingsFrame)][-1]
    assert CELLO in str(turn_prompt.delta.system_instruction)


async def held_embeddings_call(
    frames: Sequence[Frame], *, budget_s: float, before: Sequence[FrameProcessor] = ()
) -> tuple[Sequence[Frame], MemoryContextProcessor, HeldLLM]:
    """STT, ``before``, the memory processor and a ``HeldLLM``; every embedding held at its gate."""
    gate = threading.Event()
    embedder = TopicEmbedder(gate)
    stt, memory_context, llm = TextSTT(), processor(embedder, budget_s), HeldLLM(gate)
    memory_context.listen(stt)
    try:
        down, _ = await run_test(
            Pipeline([stt, *before, memory_context, llm]), frames_to_send=frames
        )
    finally:
        gate.set()
    return down, memory_context, llm


async def test_the_turn_goes_on_to_the_llm_while_its_embedding_is_held() -> None:
    down, memory_context, llm = await held_embeddings_call(
        [
            SleepFrame(sleep=0.3),
            TranscriptionFrame(ABOUT_MUSIC, "caller", "now"),
            turn(ABOUT_MUSIC),
            SleepFrame(sleep=0.2),
        ],
        budget_s=0.05,
    )
    assert llm.held_at_turn == [True]  # the turn reached the LLM, the embedding still held
    assert [f for f in down if isinstance(f, LLMContextFrame)]
    assert memory_context.stats.dense_skipped == 1 and memory_context.stats.dense_used == 0


class TurnEndTimer(FrameProcessor):
    """Pushes each user turn from a task of its own, as Pipecat's end-of-turn timers do.

    An interruption does not cancel that task, so only the memory processor can drop a turn
    it holds when the caller speaks again.
    """

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self.create_task(self.push_frame(frame, direction))
        else:
            await self.push_frame(frame, direction)


async def test_a_turn_interrupted_while_its_recall_waits_never_reaches_the_llm() -> None:
    down, _, llm = await held_embeddings_call(
        [
            SleepFrame(sleep=0.3),
            TranscriptionFrame(ABOUT_MUSIC, "caller", "now"),
            turn(ABOUT_MUSIC),  # waits in recall for its vector, held at the gate
            SleepFrame(sleep=0.1),
            InterruptionFrame(),  # the caller speaks again
            SleepFrame(sleep=0.6),  # past the recall budget
            turn(ABOUT_INSECTS),
        ],
        budget_s=0.5,
        before=[TurnEndTimer()],
    )
    # As a queued processor's cancelled task would have: the superseded turn is dropped.
    assert llm.held_at_turn == [True]
    contexts = [f for f in down if isinstance(f, LLMContextFrame)]
    assert [_last_user(f) for f in contexts] == [ABOUT_INSECTS]


def _last_user(frame: LLMContextFrame) -> str:
    return str(frame.context.messages[-1]["content"])  # type: ignore[index]
