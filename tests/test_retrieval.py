"""The ranking: relevance, context, recency, confidence, the floor, budgets and determinism."""

from __future__ import annotations

import random

import numpy as np
import pytest

from memory.models import CONFIDENCE_FLOOR, CallerMemory, CallerProfile, Fact, Turn
from memory.recall.embeddings import E5Embedder, HashingEmbedder, encode_compact, with_embeddings
from memory.recall.ranking import (
    MemoryItem,
    RankingConfig,
    RecallIndex,
    embedding_texts,
    estimate_tokens,
    fact_items,
    select_for_call_start,
    turn_id,
    turn_items,
    warm_purpose,
)

NOW = 1_750_000_000.0
DAY = 86_400.0
RECENCY_ONLY = RankingConfig(recency_weight=1.0, context_weight=0.0)


def fact(text: str, *, age_days: float = 1.0, confidence: float = 0.8, **fields) -> Fact:
    at = NOW - age_days * DAY
    return Fact(text=text, confidence=confidence, created_at=at, last_confirmed_at=at, **fields)


def ids(results) -> list[str]:
    return [result.id for result in results]


def test_empty_memory() -> None:
    index = RecallIndex([])
    assert len(index) == 0
    assert index.search("anything", k=5, now=NOW) == []
    assert RecallIndex.from_memory(CallerMemory()).search("anything", k=5) == []
    assert select_for_call_start(CallerMemory(), purpose="support", token_budget=500) == []


def test_lexical_relevance_finds_the_matching_fact() -> None:
    facts = [
        fact("Caller is vegetarian"),
        fact("Caller has two dogs"),
        fact("Caller lives in Girona"),
    ]
    index = RecallIndex(fact_items(facts))
    results = index.search("any vegetarian options?", k=3, now=NOW)
    assert results[0].text == "Caller is vegetarian"
    assert results[0].lexical > 0
    assert results[0].similarity is None  # no query vector: lexical only


def test_stemming_follows_the_memory_language() -> None:
    facts = [fact("El cliente pagó las facturas de marzo"), fact("El cliente tiene un perro")]
    index = RecallIndex(fact_items(facts), language="es-ES")
    assert index.search("¿y la factura?", k=1, now=NOW)[0].text.startswith("El cliente pagó")


def test_facts_under_the_floor_and_superseded_facts_are_never_returned() -> None:
    newer = fact("Caller moved to Barcelona")
    facts = [
        fact("Caller might own a boat", confidence=CONFIDENCE_FLOOR - 0.01),
        fact("Caller lives in Madrid", superseded_by=newer.id),
        newer,
        fact("Caller owns a boat", confidence=CONFIDENCE_FLOOR),
    ]
    index = RecallIndex.from_memory(CallerMemory(facts=facts))
    found = {result.text for result in index.search("boat Madrid Barcelona", k=10, now=NOW)}
    assert found == {"Caller moved to Barcelona", "Caller owns a boat"}
    # Items built by hand are held to the floor too.
    low = MemoryItem(kind="fact", id="low", text="boat", at=NOW, confidence=0.3)
    assert RecallIndex([low]).search("boat", k=1, now=NOW) == []


def test_recency_decays_by_half_per_half_life() -> None:
    facts = [fact("Caller called", age_days=age) for age in (0, 30, 60)]
    facts = [f.model_copy(update={"id": f"f{i}"}) for i, f in enumerate(facts)]
    index = RecallIndex(fact_items(facts), config=RECENCY_ONLY)
    results = index.search("", k=3, now=NOW)
    assert ids(results) == ["f0", "f1", "f2"]
    scores = [result.score / 0.8 for result in results]  # score carries the confidence
    assert scores == pytest.approx([1.0, 0.5, 0.25], rel=1e-6)


def test_half_life_is_configurable() -> None:
    item = MemoryItem(kind="fact", id="f", text="x", at=NOW - 10 * DAY)
    short = RankingConfig(recency_weight=1.0, half_life_days=10.0)
    assert RecallIndex([item], config=short).search("", k=1, now=NOW)[0].score == pytest.approx(0.5)


def test_recency_breaks_equal_relevance() -> None:
    old = fact("Caller asked about the refund", age_days=200).model_copy(update={"id": "old"})
    new = fact("Caller asked about the refund", age_days=2).model_copy(update={"id": "new"})
    results = RecallIndex(fact_items([old, new])).search("refund", k=2, now=NOW)
    assert ids(results) == ["new", "old"]


def test_relevance_outweighs_a_little_recency() -> None:
    relevant = fact("Caller's refund for order 1234 is pending", age_days=300)
    recent = fact("Caller likes jazz", age_days=0)
    results = RecallIndex(fact_items([relevant, recent])).search("the refund", k=2, now=NOW)
    assert results[0].text == relevant.text


def test_confidence_weighs_the_score() -> None:
    sure = fact("Caller is allergic to nuts", confidence=0.95).model_copy(update={"id": "sure"})
    unsure = fact("Caller is allergic to nuts", confidence=0.6).model_copy(update={"id": "unsure"})
    results = RecallIndex(fact_items([unsure, sure])).search("nuts", k=2, now=NOW)
    assert ids(results) == ["sure", "unsure"]
    assert results[1].score == pytest.approx(results[0].score * 0.6 / 0.95)


def test_ties_come_out_in_one_order_whatever_the_input_order() -> None:
    items = [
        MemoryItem(kind="fact", id=f"id{n:02d}", text="same words", at=NOW - (n % 3) * DAY)
        for n in range(12)
    ]
    expected = ids(RecallIndex(items).search("same", k=12, now=NOW))
    for seed in range(5):
        shuffled = items[:]
        random.Random(seed).shuffle(shuffled)
        assert ids(RecallIndex(shuffled).search("same", k=12, now=NOW)) == expected
    # Equal scores: newest first, then by id.
    assert expected[:4] == ["id00", "id03", "id06", "id09"]


def test_exclude_and_kinds() -> None:
    turns = [Turn(role="user", text="My parcel never arrived", at=NOW - DAY, call_id="c1")]
    facts = [fact("Caller's parcel was lost in March")]
    index = RecallIndex.from_memory(CallerMemory(facts=facts, recent_turns=turns))
    everything = index.search("parcel", k=5, now=NOW)
    assert {result.kind for result in everything} == {"fact", "turn"}
    only_turns = index.search("parcel", k=5, now=NOW, kinds=("turn",))
    assert [result.kind for result in only_turns] == ["turn"]
    rest = index.search("parcel", k=5, now=NOW, exclude={facts[0].id, "unknown"})
    assert ids(rest) == [turn_id(turns[0])]


def test_k_bounds_the_results() -> None:
    facts = [fact(f"Caller note number {n}") for n in range(20)]
    index = RecallIndex(fact_items(facts))
    assert len(index.search("note", k=7, now=NOW)) == 7
    assert index.search("note", k=0, now=NOW) == []


def test_turn_ids_are_stable_and_turns_are_labelled() -> None:
    turn = Turn(role="user", text="Hola", at=1_700_000_000.1234, call_id="call-9")
    assert turn_id(turn) == turn_id(turn.model_copy()) == "call-9:1700000000123"
    agent = Turn(role="assistant", text="Hi there", at=NOW, call_id="call-9")
    items = turn_items([turn, agent])
    assert [item.text for item in items] == ["Caller: Hola", "Agent: Hi there"]
    assert {item.thread for item in items} == {"call-9"}


def test_a_turn_is_embedded_with_the_turn_before_it_in_its_call() -> None:
    items = [
        MemoryItem(kind="turn", id="a1", text="Q: when?", at=1, thread="a"),
        MemoryItem(kind="turn", id="b1", text="other call", at=2, thread="b"),
        MemoryItem(kind="turn", id="a2", text="A: Sunday", at=3, thread="a"),
        MemoryItem(kind="fact", id="f", text="a fact", at=4),
    ]
    assert embedding_texts(items) == ["Q: when?", "other call", "Q: when?\nA: Sunday", "a fact"]


def test_a_reply_inherits_relevance_from_its_question() -> None:
    # "Where did you go?" matches the query; its answer does not share a word, yet it is what
    # the caller wants back. Context lifts it above an unrelated turn from another call.
    turns = [
        Turn(role="assistant", text="Where did you go on holiday?", at=NOW - 9, call_id="c1"),
        Turn(role="user", text="Menorca, with my sister.", at=NOW - 8, call_id="c1"),
        Turn(role="user", text="My router keeps dropping.", at=NOW - 7, call_id="c2"),
    ]
    index = RecallIndex(turn_items(turns))
    results = index.search("holiday plans", k=3, now=NOW)
    assert [result.text for result in results[:2]] == [
        "Agent: Where did you go on holiday?",
        "Caller: Menorca, with my sister.",
    ]
    flat = RecallIndex(turn_items(turns), config=RankingConfig(context_weight=0.0))
    assert flat.search("holiday plans", k=3, now=NOW)[1].score < results[1].score


def test_dense_relevance_with_an_embedder() -> None:
    embedder = HashingEmbedder()
    facts = [fact("Caller is vegetarian"), fact("Caller rents a flat")]
    index = RecallIndex(fact_items(facts), embedder=embedder)
    vector = index.embed_query("vegetarianism")
    assert vector is not None
    results = index.search("vegetarianism", k=2, now=NOW, query_vector=vector)
    assert results[0].text == "Caller is vegetarian"
    assert results[0].similarity is not None
    assert results[0].similarity > results[1].similarity
    assert index.embed_query("   ") is None
    assert RecallIndex(fact_items(facts)).embed_query("x") is None


def test_stored_embeddings_are_used_and_stale_ones_recomputed() -> None:
    embedder = HashingEmbedder()
    stored = fact("Caller is vegetarian")
    stored.embedding = encode_compact(embedder.embed(["Caller has a boat"])[0], model=embedder.name)
    stale = fact("Caller has a boat")
    stale.embedding = encode_compact(np.ones(embedder.dim), model="another-model")
    items = fact_items([stored, stale], model=embedder.name)
    assert items[0].vector is not None  # taken as stored, even if it says something else
    assert items[1].vector is None
    index = RecallIndex(items, embedder=embedder)
    query = embedder.embed_query(["boat"])[0]
    results = index.search("", k=2, now=NOW, query_vector=query)
    similarities = {result.text: result.similarity for result in results}
    # The stored vector (of "boat") was used for the first fact, not recomputed from its text.
    assert similarities["Caller is vegetarian"] == pytest.approx(
        similarities["Caller has a boat"], abs=0.02
    )


def test_memories_without_a_vector_count_as_dissimilar() -> None:
    with_vector = MemoryItem(kind="fact", id="a", text="alpha", at=NOW, vector=np.ones(4) / 2)
    without = MemoryItem(kind="fact", id="b", text="beta", at=NOW)
    index = RecallIndex([with_vector, without])
    results = index.search("", k=2, now=NOW, query_vector=np.ones(4, dtype=np.float32) / 2)
    assert ids(results) == ["a", "b"]
    assert results[1].similarity == 0.0


def test_a_spanish_question_finds_an_english_fact_with_the_default_model() -> None:
    embedder = E5Embedder()
    facts = [
        fact("Caller is allergic to penicillin"),
        fact("Caller prefers weekday mornings"),
        fact("Caller's daughter plays football"),
    ]
    index = RecallIndex(fact_items(facts), embedder=embedder)
    query = "¿Qué antibióticos no puedo tomar?"
    results = index.search(query, k=1, now=NOW, query_vector=index.embed_query(query))
    assert results[0].text == "Caller is allergic to penicillin"


def test_a_thousand_facts_still_give_the_right_answer() -> None:
    rng = random.Random(3)
    words = ["order", "delivery", "invoice", "account", "password", "address", "plan", "refund"]
    facts = [
        fact(
            f"Caller mentioned {rng.choice(words)} {rng.choice(words)} number {n}",
            age_days=rng.uniform(0, 365),
        )
        for n in range(1000)
    ]
    facts.append(fact("Caller's parrot is called Kiwi", age_days=400))
    embedder = HashingEmbedder()
    index = RecallIndex(fact_items(facts), embedder=embedder)
    assert len(index) == 1001
    query = "what is the parrot's name"
    results = index.search(query, k=10, now=NOW, query_vector=index.embed_query(query))
    assert results[0].text == "Caller's parrot is called Kiwi"
    assert len(results) == 10


def test_call_start_prefers_relevant_and_recent_facts() -> None:
    facts = [
        fact("Caller's dental implant check-up is due", age_days=90),
        fact("Caller's cat is called Miso", age_days=1),
        fact("Caller once asked about parking", age_days=200),
    ]
    memory = CallerMemory(facts=facts)
    chosen = select_for_call_start(
        memory, purpose="Dental clinic: appointments and implant check-ups", token_budget=100, k=2
    )
    assert [f.text for f in chosen] == [facts[0].text, facts[1].text]
    # No purpose: the newest first.
    chosen = select_for_call_start(memory, purpose="", token_budget=100, k=3)
    assert [f.text for f in chosen] == [facts[1].text, facts[0].text, facts[2].text]


def test_call_start_defaults_to_ten_and_keeps_to_the_token_budget() -> None:
    facts = [fact(f"Caller fact number {n:02d}", age_days=n) for n in range(15)]
    memory = CallerMemory(facts=facts)
    assert len(select_for_call_start(memory, purpose="", token_budget=10_000)) == 10
    cost = estimate_tokens(facts[0].text)
    chosen = select_for_call_start(memory, purpose="", token_budget=3 * cost)
    assert [f.text for f in chosen] == [f.text for f in facts[:3]]
    assert select_for_call_start(memory, purpose="", token_budget=0) == []


def test_call_start_skips_a_fact_too_long_for_what_is_left() -> None:
    long = fact("Caller " + "explained at length " * 12, age_days=0)
    short = fact("Caller is vegan", age_days=5)
    budget = estimate_tokens(short.text) + 2
    memory = CallerMemory(facts=[long, short])
    assert select_for_call_start(memory, purpose="", token_budget=budget) == [short]


def test_call_start_uses_the_embedder_and_the_floor() -> None:
    facts = [
        fact("Caller always pays by card", age_days=50),
        fact("Caller may be moving abroad", age_days=0, confidence=0.2),
        fact("Caller likes sailing", age_days=0),
    ]
    embedder = E5Embedder()
    # The worker stores the vectors and the bot warms the purpose: the call start embeds nothing.
    memory = CallerMemory(
        profile=CallerProfile(language="en"), facts=with_embeddings(facts, embedder)
    )
    warm_purpose(embedder, "billing and payments")
    chosen = select_for_call_start(
        memory,
        purpose="billing and payments",
        token_budget=200,
        k=1,
        embedder=embedder,
    )
    assert [f.text for f in chosen] == ["Caller always pays by card"]
    every = select_for_call_start(memory, purpose="billing", token_budget=200)
    assert "Caller may be moving abroad" not in [f.text for f in every]


class RecordingEmbedder(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.queries: list[str] = []

    def embed_query(self, texts):
        self.queries.extend(texts)
        return super().embed_query(texts)


def test_only_the_end_of_a_long_query_is_embedded() -> None:
    embedder = RecordingEmbedder()
    index = RecallIndex(fact_items([fact("Caller is vegetarian")]), embedder=embedder)
    words = [f"w{n}" for n in range(30)]
    assert index.embed_query(" ".join(words), max_words=4) is not None
    assert embedder.queries == ["w26 w27 w28 w29"]


def test_call_start_embeds_nothing_and_ranks_facts_without_vectors_on_their_words() -> None:
    class CountingEmbedder(HashingEmbedder):
        calls = 0

        def embed(self, texts):  # type: ignore[no-untyped-def]
            CountingEmbedder.calls += 1
            return super().embed(texts)

        def embed_query(self, texts):  # type: ignore[no-untyped-def]
            CountingEmbedder.calls += 1
            return super().embed_query(texts)

    facts = [fact(f"Caller note number {i}", age_days=i % 30) for i in range(1000)]
    facts.append(fact("Caller pays invoices by card", age_days=40))
    memory = CallerMemory(profile=CallerProfile(language="en"), facts=facts)
    chosen = select_for_call_start(
        memory, purpose="invoices", token_budget=200, k=3, embedder=CountingEmbedder()
    )
    assert CountingEmbedder.calls == 0
    assert chosen and len(chosen) <= 3
