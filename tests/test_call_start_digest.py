"""The call-start digest: the same block as the bounded path, kept current by every write."""

from __future__ import annotations

import asyncio
import zlib

import pytest
from pipecat.frames.frames import LLMUpdateSettingsFrame
from pipecat.tests.utils import SleepFrame, run_test
from redis.asyncio import Redis

from memory.analysis.worker import AnalysisWorker, JobOutcome
from memory.models import CallAnalysis, CallerMemory, CallRecord, Fact, Turn, now
from memory.privacy.identity import CallerIdentity
from memory.recall.call_start import (
    call_start_spec,
    load_call_start,
    load_for_recall,
    rebuild_digest,
)
from memory.recall.embeddings import Embedder, with_embeddings
from memory.recall.ranking import (
    MAX_CALL_START_CANDIDATES,
    call_start_facts,
    turn_id,
    warm_purpose,
)
from memory.recall.render import RECENT_TURNS_SHOWN, render_memory
from memory.recall.turns import MemoryStats, TurnRecall
from memory.store.callers import MemoryStore
from memory.store.corrections import delete_fact, edit_fact
from memory.store.digest import CallStartSpec
from memory.store.queue import AnalysisQueue
from processors.memory_context import MemoryContextProcessor
from tests.fakes.anthropic_server import FakeAnthropic
from tests.support.worker import EMBEDDER, analysed_reply, caller, hang_up, process_next
from tests.test_memory_context import TEMPLATE, VOICES, opening, prompts, user_turn

PURPOSE = "Take bakery orders and answer questions about deliveries."
TOKEN_BUDGET = 400
MAX_FACTS = 10
_TOPICS = ["delivery", "cake", "allergy", "invoice", "van", "birthday", "order", "morning"]


def spec_for(embedder: Embedder | None) -> CallStartSpec:
    return call_start_spec(
        purpose=PURPOSE, token_budget=TOKEN_BUDGET, max_facts=MAX_FACTS, embedder=embedder
    )


def block(memory: CallerMemory, spec: CallStartSpec, embedder: Embedder | None) -> str:
    """What a call start renders: the one selection, then the one renderer."""
    facts = call_start_facts(
        memory,
        purpose=spec.purpose,
        token_budget=spec.token_budget,
        max_facts=spec.max_facts,
        embedder=embedder,
    )
    return render_memory(memory, facts, token_budget=spec.token_budget)


async def remembered(store: MemoryStore, count: int, *, vectors: bool = False) -> CallerIdentity:
    """A returning caller with ``count`` facts (some superseded, some unsure) and turns."""
    who = caller()
    facts = [
        Fact(
            text=f"Caller talked about the {_TOPICS[i % len(_TOPICS)]} number {i}",
            confidence=[0.9, 0.7, 0.4, 0.95][i % 4],
            last_confirmed_at=now() - 60 * (i % 37),
            superseded_by="newer" if i % 11 == 0 else None,
        )
        for i in range(count)
    ]
    if vectors:
        facts = with_embeddings(facts, EMBEDDER)
    for start in range(0, count, 500):
        await store.upsert_facts(who, facts[start : start + 500])
    await store.set_name(who, "Marta")
    for role, text in [("user", "Is the cake ready?"), ("assistant", "It is, for Friday.")]:
        await store.append_turn(who, Turn(role=role, text=text, call_id="earlier"))
    return who


@pytest.mark.parametrize("with_vectors", [False, True], ids=["lexical", "dense"])
@pytest.mark.parametrize("count", [20, MAX_CALL_START_CANDIDATES + 200])
async def test_the_digest_the_bounded_path_and_a_full_load_render_the_same_block(
    redis_client: Redis, key_prefix: str, count: int, with_vectors: bool
) -> None:
    store = MemoryStore(redis_client, prefix=key_prefix, max_facts=0)
    embedder = EMBEDDER if with_vectors else None
    spec = spec_for(embedder)
    if embedder is not None:
        warm_purpose(embedder, PURPOSE)
    who = await remembered(store, count, vectors=with_vectors)
    for i in range(RECENT_TURNS_SHOWN):  # more turns than the block shows
        await store.append_turn(who, Turn(role="user", text=f"And loaf {i}?", call_id="earlier"))

    full = block(await store.load(who), spec, embedder)
    bounded = await load_call_start(store, who, spec)
    assert bounded.selected is None
    assert bounded.complete == (count <= MAX_CALL_START_CANDIDATES)
    assert await rebuild_digest(store, who, embedder)
    from_digest = await load_call_start(store, who, spec)

    assert from_digest.selected is not None
    assert len(from_digest.recent_turns) == RECENT_TURNS_SHOWN  # what the block can show
    assert "Marta" in full and "Caller talked about" in full
    assert block(bounded, spec, embedder) == full
    assert block(from_digest, spec, embedder) == full


async def test_a_digest_serves_only_the_spec_it_was_built_for(store: MemoryStore) -> None:
    who = await remembered(store, 30)
    await store.request_digest(who, spec_for(None))
    assert await rebuild_digest(store, who, None)
    assert await store.read_digest(who, spec_for(None)) is not None
    other = CallStartSpec(purpose="Dental clinic", token_budget=TOKEN_BUDGET, max_facts=MAX_FACTS)
    assert await store.read_digest(who, other) is None


async def current(store: MemoryStore, who: CallerIdentity) -> CallerMemory:
    """Rebuild the digest as the worker does, and read it as a call start does."""
    assert await rebuild_digest(store, who, None)
    memory = await store.read_digest(who, spec_for(None))
    assert memory is not None
    return memory


async def test_every_write_a_call_start_sees_deletes_the_digest_and_asks_for_a_rebuild(
    store: MemoryStore, redis_client: Redis
) -> None:
    who = await remembered(store, 5)
    await store.request_digest(who, spec_for(None))
    memory = await current(store, who)
    await store.digest_requests()  # the request the spec came with, served by current()

    async def after(write: object) -> CallerMemory:
        await write  # type: ignore[misc]
        # Gone in the write's own step: a call start reads the digest alone.
        assert not await redis_client.exists(store.key_for(who, "digest"))
        assert await store.read_digest(who, spec_for(None)) is None
        assert [c.key for c in await store.digest_requests()] == [who.key]
        return await current(store, who)

    # The remember tool.
    memory = await after(store.upsert_facts(who, [Fact(text="Caller has a cake allergy")]))
    assert "Caller has a cake allergy" in [f.text for f in memory.facts]
    # The dashboard: rename, edit, delete.
    memory = await after(store.set_name(who, "Marta P."))
    assert memory.profile.name == "Marta P."
    allergy = next(f for f in memory.facts if f.text == "Caller has a cake allergy")
    memory = await after(edit_fact(store, who, allergy.id, "Caller has a nut allergy"))
    texts = [f.text for f in memory.facts]
    assert "Caller has a nut allergy" in texts and "Caller has a cake allergy" not in texts
    nut = next(f for f in memory.facts if f.text == "Caller has a nut allergy")
    memory = await after(delete_fact(store, who, nut.id))
    assert "Caller has a nut allergy" not in [f.text for f in memory.facts]
    # An analysed call and its supersedes.
    old = memory.facts[0]
    newer = Fact(text="Caller now orders on Mondays", source_call_id="c2")
    record = CallRecord(
        call_id="c2",
        agent_id=who.agent_id,
        started_at=now() - 60,
        ended_at=now(),
        analysis=CallAnalysis(
            summary="Moved the order", urgency=2, action="none", sentiment="neutral", language="en"
        ),
    )
    superseded = old.model_copy(update={"superseded_by": newer.id})
    memory = await after(store.record_call(who, record, facts=[newer, superseded]))
    texts = [f.text for f in memory.facts]
    assert "Caller now orders on Mondays" in texts and old.text not in texts
    assert memory.profile.last_summary == "Moved the order"
    # Embeddings the worker stored.
    vector = with_embeddings([newer], EMBEDDER)[0].embedding
    assert vector is not None
    memory = await after(store.set_embeddings(who, {newer.id: vector}))
    # A scrubbed transcript.
    await store.append_turn(who, Turn(role="user", text="My PIN is 4321", call_id="c3"))
    stored = await store.get_call(who, "c3")
    assert stored is not None
    scrubbed = [t.model_copy(update={"text": "My PIN is [redacted]"}) for t in stored.transcript]
    memory = await after(store.replace_transcript(who, "c3", scrubbed))
    assert memory.recent_turns[-1].text == "My PIN is [redacted]"


async def test_cap_evictions_make_the_digest_stale(redis_client: Redis, key_prefix: str) -> None:
    store = MemoryStore(redis_client, prefix=key_prefix, max_facts=3)
    who = caller()
    await store.upsert_facts(who, [Fact(text=f"Caller fact {i}") for i in range(3)])
    await store.request_digest(who, spec_for(None))
    before = await current(store, who)
    await store.upsert_facts(who, [Fact(text="Caller maybe likes tea", confidence=0.3)])
    # The unsure fact is evicted at once: nothing a call start shows changed but the version.
    assert await store.read_digest(who, spec_for(None)) is None
    after = await current(store, who)
    assert [f.text for f in after.facts] == [f.text for f in before.facts]


async def test_turns_appended_during_a_call_make_the_digest_stale(store: MemoryStore) -> None:
    who = await remembered(store, 3)
    await store.request_digest(who, spec_for(None))
    await current(store, who)
    await store.append_turn(who, Turn(role="user", text="One more thing", call_id="now"))
    assert await store.read_digest(who, spec_for(None)) is None
    assert (await current(store, who)).recent_turns[-1].text == "One more thing"


async def test_a_digest_built_before_a_write_is_not_stored(store: MemoryStore) -> None:
    who = await remembered(store, 3)
    await store.request_digest(who, spec_for(None))
    memory, version = await store.load_candidates(who, count=300, vectors=False)
    await store.upsert_facts(who, [Fact(text="Caller moved to Girona")])
    assert not await store.write_digest(who, version=version, digest=b"{}")
    assert await store.read_digest(who, spec_for(None)) is None
    assert memory.facts  # what the late build read


@pytest.mark.parametrize(
    "garbled",
    [b"not compressed", zlib.compress(b'{"spec": "cut sh', 1), zlib.compress(b'{"spec": 7}', 1)],
    ids=["not-zlib", "cut-short", "wrong-shape"],
)
async def test_a_digest_that_cannot_be_read_falls_back_to_the_same_block_and_asks_again(
    store: MemoryStore, redis_client: Redis, garbled: bytes
) -> None:
    who = await remembered(store, 5)
    spec = spec_for(None)
    await store.request_digest(who, spec)
    expected = block(await current(store, who), spec, None)
    await store.digest_requests()
    await redis_client.set(store.key_for(who, "digest"), garbled)

    memory = await load_call_start(store, who, spec)
    assert memory.selected is None  # the bounded path
    assert block(memory, spec, None) == expected
    assert [c.key for c in await store.digest_requests()] == [who.key]
    assert await rebuild_digest(store, who, None)
    assert (await load_call_start(store, who, spec)).selected is not None


async def test_the_digest_expires_with_the_memory_it_was_made_from(
    store: MemoryStore, redis_client: Redis
) -> None:
    who = await remembered(store, 3)
    await store.request_digest(who, spec_for(None))
    await redis_client.expire(store.key_for(who, "profile"), 100)
    await current(store, who)
    assert 0 < await redis_client.pttl(store.key_for(who, "digest")) <= 100_000
    # A write a call start does not read leaves the digest, and its TTL, as they were.
    await store.set_value(who, "plan", "gold")
    assert 0 < await redis_client.pttl(store.key_for(who, "digest")) <= 100_000


async def test_forget_removes_the_digest_and_no_rebuild_brings_it_back(
    store: MemoryStore, redis_client: Redis
) -> None:
    who = await remembered(store, 3)
    await store.request_digest(who, spec_for(None))
    await current(store, who)
    assert await redis_client.exists(store.key_for(who, "digest"))
    await store.forget(who)
    assert not await redis_client.exists(store.key_for(who, "digest"))
    assert not await rebuild_digest(store, who, None)
    assert not await redis_client.exists(store.key_for(who, "digest"))


async def test_the_worker_rebuilds_the_digest_after_an_analysis_and_on_request(
    store: MemoryStore, queue: AnalysisQueue, worker: AnalysisWorker, fake: FakeAnthropic
) -> None:
    spec = spec_for(EMBEDDER)
    await store.request_digest(caller(), spec)  # the bot said how it chooses facts
    await store.digest_requests()
    fake.script(analysed_reply())
    who = await hang_up(store, queue, "call-1")
    assert await process_next(worker) == JobOutcome.ANALYSED

    memory = await store.read_digest(who, spec)
    assert memory is not None and memory.profile.name == "Marta"
    assert [f.text for f in memory.facts] == ["Caller orders cakes for Fridays"]

    await store.set_name(who, "Marta P.")
    assert await store.read_digest(who, spec) is None
    assert await worker.rebuild_requested_digests() == 1
    rebuilt = await store.read_digest(who, spec)
    assert rebuilt is not None and rebuilt.profile.name == "Marta P."


async def test_a_stale_digest_falls_back_and_the_call_starts_with_what_changed(
    store: MemoryStore,
) -> None:
    who = await remembered(store, 5)
    spec = spec_for(None)
    await store.request_digest(who, spec)
    await current(store, who)
    await store.upsert_facts(who, [Fact(text="Caller wants the cake in blue", confidence=1.0)])
    proc = MemoryContextProcessor(
        memory=asyncio.ensure_future(load_call_start(store, who, spec)),
        prompt_template=TEMPLATE,
        opening=opening,
        voices=VOICES,
        params=MemoryContextProcessor.Params(purpose=PURPOSE),
        load_all=lambda: store.load(who),
    )
    down, _ = await run_test(proc, frames_to_send=[], expected_down_frames=None)
    prompts = [f.delta.system_instruction for f in down if isinstance(f, LLMUpdateSettingsFrame)]
    assert prompts and "Caller wants the cake in blue" in str(prompts[-1])


async def test_turns_said_in_one_millisecond_get_different_ids_and_are_not_recalled_again(
    store: MemoryStore,
) -> None:
    who = caller()
    at = now()
    turns = [
        Turn(role="user", text="My dog Rex is ill", at=at, call_id="c1"),
        Turn(role="assistant", text="Sorry to hear about Rex", at=at, call_id="c1"),
    ]
    await store.append_turns(who, turns)
    await store.append_turns(who, [Turn(role="user", text="Rex again", at=at, call_id="c2")])
    memory = await store.load(who)
    ids = [turn_id(turn) for turn in memory.recent_turns]
    assert len(set(ids)) == 3
    recall = TurnRecall(budget_s=1.0, embedder=None, stats=MemoryStats())
    await recall.build(memory, in_prompt=[])
    assert await recall.recall("How is Rex?")
    first = recall.recalled
    assert not await recall.recall("How is Rex?")  # nothing recalled twice
    assert recall.recalled == first
    stored = await store.get_call(who, "c1")
    assert stored is not None and [t.seq for t in stored.transcript] == [1, 2]
    # A stored turn appended again (copied, as an import might) is numbered anew.
    await store.append_turns(who, [stored.transcript[0].model_copy(update={"call_id": "c4"})])
    assert [t.seq for t in (await store.load(who)).recent_turns] == [1, 2, 3, 4]


async def test_a_call_started_from_the_digest_recalls_facts_it_left_out(store: MemoryStore) -> None:
    who = await remembered(store, 40)
    await store.upsert_facts(
        who, [Fact(text="Caller's dog Rex is afraid of the vacuum", confidence=0.6)]
    )
    spec = call_start_spec(purpose=PURPOSE, token_budget=TOKEN_BUDGET, max_facts=2, embedder=None)
    await store.request_digest(who, spec)
    assert await rebuild_digest(store, who, None)
    start = await load_call_start(store, who, spec)
    assert start.selected is not None and not start.complete
    assert all("Rex" not in fact.text for fact in start.facts)
    proc = MemoryContextProcessor(
        memory=asyncio.ensure_future(asyncio.sleep(0, start)),
        prompt_template=TEMPLATE,
        opening=opening,
        voices=VOICES,
        params=MemoryContextProcessor.Params(purpose=PURPOSE, max_facts=2),
        load_all=lambda: load_for_recall(store, who, None),
    )
    down, _ = await run_test(
        proc,
        frames_to_send=[SleepFrame(sleep=0.3), user_turn("Can you keep my dog Rex calm?")],
        expected_down_frames=None,
    )
    start_prompt, turn_prompt = prompts(down)
    assert "Rex" not in start_prompt
    assert "Caller's dog Rex is afraid of the vacuum" in turn_prompt
