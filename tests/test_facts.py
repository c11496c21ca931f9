"""Fact merge: duplicates confirm, superseded facts are marked, the audit lists every change."""

from __future__ import annotations

import pytest

from memory.analysis.merge import lexical_similarity, merge_facts
from memory.models import ExtractedFact, Fact, fact_id_for

T0 = 1_000_000.0
T1 = 2_000_000.0


def known(text: str, confidence: float = 0.8, **fields: object) -> Fact:
    return Fact(
        text=text,
        confidence=confidence,
        source_call_id="call-0",
        created_at=T0,
        last_confirmed_at=T0,
        **fields,
    )


def proposed(text: str, confidence: float = 0.9, supersedes: list[str] | None = None):
    return ExtractedFact(text=text, confidence=confidence, supersedes=supersedes or [])


def by_id(facts: list[Fact]) -> dict[str, Fact]:
    return {fact.id: fact for fact in facts}


def test_new_fact_is_written_with_its_call() -> None:
    merge = merge_facts([], [proposed("Caller is vegetarian")], call_id="call-1", at=T1)
    [fact] = merge.upserts
    assert fact.text == "Caller is vegetarian"
    assert fact.id == fact_id_for("Caller is vegetarian")
    assert (fact.source_call_id, fact.created_at, fact.last_confirmed_at) == ("call-1", T1, T1)
    assert (merge.written, merge.confirmed, merge.superseded) == ([fact.id], [], [])


def test_exact_duplicate_confirms_and_keeps_higher_confidence() -> None:
    old = known("Caller is vegetarian", confidence=0.9)
    merge = merge_facts(
        [old], [proposed("caller is  vegetarian.", confidence=0.6)], call_id="call-1", at=T1
    )
    [fact] = merge.upserts
    assert fact.id == old.id
    assert fact.confidence == 0.9
    assert fact.last_confirmed_at == T1
    assert (fact.created_at, fact.source_call_id) == (T0, "call-0")
    assert (merge.written, merge.confirmed, merge.superseded) == ([], [old.id], [])


def test_confirmation_raises_confidence_above_the_floor() -> None:
    old = known("Caller prefers email receipts", confidence=0.3)
    assert not old.injectable
    merge = merge_facts([old], [proposed("Caller prefers email receipts", 0.85)], call_id="c1")
    [fact] = merge.upserts
    assert fact.confidence == 0.85
    assert fact.injectable


def test_near_duplicate_confirms_the_old_wording() -> None:
    old = known("Caller prefers weekday mornings", confidence=0.7)
    merge = merge_facts(
        [old], [proposed("Caller says they prefer mornings on weekdays", 0.8)], call_id="c1", at=T1
    )
    [fact] = merge.upserts
    assert (fact.id, fact.text) == (old.id, old.text)
    assert (fact.confidence, fact.last_confirmed_at) == (0.8, T1)
    assert (merge.written, merge.confirmed) == ([], [old.id])


def test_near_duplicate_uses_the_given_similarity() -> None:
    old = known("Caller is vegan")
    calls: list[tuple[str, str]] = []

    def similar(a: str, b: str) -> float:
        calls.append((a, b))
        return 0.95

    merge = merge_facts(
        [old],
        [proposed("Caller eats no animal products")],
        call_id="c1",
        similar=similar,
        threshold=0.9,
    )
    assert merge.confirmed == [old.id]
    assert calls == [("Caller is vegan", "Caller eats no animal products")]


def test_different_facts_are_not_near_duplicates() -> None:
    assert lexical_similarity("Caller is vegetarian", "Caller is not vegetarian") < 0.75
    assert lexical_similarity("Caller prefers mornings", "Caller prefers evenings") < 0.75
    assert lexical_similarity("Caller lives at 12 Main St", "Caller lives at 14 Main St") < 0.75
    merge = merge_facts(
        [known("Caller is vegetarian")], [proposed("Caller is not vegetarian")], call_id="c1"
    )
    assert len(merge.written) == 1


def test_supersede_marks_the_old_fact() -> None:
    old = known("Caller lives in Barcelona")
    merge = merge_facts(
        [old],
        [proposed("Caller moved to Girona", 0.9, supersedes=[old.id])],
        call_id="c1",
        at=T1,
    )
    facts = by_id(merge.upserts)
    new_id = fact_id_for("Caller moved to Girona")
    assert facts[old.id].superseded_by == new_id
    assert not facts[old.id].injectable
    assert facts[new_id].injectable
    assert (merge.written, merge.confirmed, merge.superseded) == ([new_id], [], [old.id])


def test_named_supersede_wins_over_near_duplicate() -> None:
    # Lexically near-identical, but the analysis says the new address replaces the old one.
    old = known("Caller's delivery address is 12 Main Street Springfield")
    new_text = "Caller's delivery address is 14 Main Street Springfield"
    assert lexical_similarity(old.text, new_text) < 1.0
    merge = merge_facts(
        [old],
        [proposed(new_text, supersedes=[old.id])],
        call_id="c1",
        similar=lambda a, b: 0.99,
        threshold=0.9,
    )
    assert merge.written == [fact_id_for(new_text)]
    assert merge.superseded == [old.id]


def test_supersedes_naming_a_repeat_confirms_it() -> None:
    old = known("Caller is vegetarian")
    merge = merge_facts(
        [old], [proposed("Caller is vegetarian", supersedes=[old.id])], call_id="c1"
    )
    assert (merge.confirmed, merge.superseded) == ([old.id], [])
    assert merge.upserts[0].superseded_by is None


def test_unknown_and_stale_supersede_ids_are_ignored() -> None:
    gone = known("Caller lives in Madrid", superseded_by="someone-else")
    merge = merge_facts(
        [gone],
        [proposed("Caller lives in Girona", supersedes=["no-such-fact", gone.id])],
        call_id="c1",
    )
    assert merge.superseded == []
    assert [fact.id for fact in merge.upserts] == [fact_id_for("Caller lives in Girona")]


def test_fact_under_the_floor_is_kept_but_supersedes_nothing() -> None:
    old = known("Caller lives in Barcelona", confidence=0.9)
    merge = merge_facts(
        [old], [proposed("Caller may move to Girona", 0.3, supersedes=[old.id])], call_id="c1"
    )
    [fact] = merge.upserts
    assert fact.confidence == 0.3
    assert not fact.injectable
    assert merge.written == [fact.id]
    assert merge.superseded == []


def test_superseded_fact_stated_again_is_revived() -> None:
    mornings = known(
        "Caller prefers mornings", superseded_by=fact_id_for("Caller prefers evenings")
    )
    evenings = known("Caller prefers evenings")
    merge = merge_facts(
        [mornings, evenings],
        [proposed("Caller prefers mornings", supersedes=[evenings.id])],
        call_id="c1",
    )
    facts = by_id(merge.upserts)
    assert facts[mornings.id].superseded_by is None
    assert facts[evenings.id].superseded_by == mornings.id
    assert (merge.confirmed, merge.superseded) == ([mornings.id], [evenings.id])


def test_facts_are_scrubbed_and_secret_facts_dropped() -> None:
    merge = merge_facts(
        [],
        [
            proposed("Caller's PIN is 4321"),
            proposed("Caller paid with card 4111 1111 1111 1111"),
            proposed("Caller wants invoices by post"),
        ],
        call_id="c1",
    )
    assert [fact.text for fact in merge.upserts] == ["Caller wants invoices by post"]


def test_duplicates_within_one_call_collapse() -> None:
    merge = merge_facts(
        [],
        [proposed("Caller has two dogs", 0.6), proposed("Caller has two dogs.", 0.9)],
        call_id="c1",
    )
    [fact] = merge.upserts
    assert fact.confidence == 0.9
    assert (merge.written, merge.confirmed) == ([fact.id], [])


def test_audit_lists_cover_every_change_and_inputs_stay_untouched() -> None:
    veg = known("Caller is vegetarian")
    city = known("Caller lives in Barcelona")
    quiet = known("Caller has a parrot")
    merge = merge_facts(
        [veg, city, quiet],
        [
            proposed("Caller is vegetarian", 0.95),
            proposed("Caller moved to Girona", supersedes=[city.id]),
            proposed("Caller orders every Friday"),
        ],
        call_id="c1",
        at=T1,
    )
    girona, friday = (
        fact_id_for("Caller moved to Girona"),
        fact_id_for("Caller orders every Friday"),
    )
    assert merge.written == [girona, friday]
    assert merge.confirmed == [veg.id]
    assert merge.superseded == [city.id]
    assert {fact.id for fact in merge.upserts} == {veg.id, city.id, girona, friday}
    assert quiet.id not in by_id(merge.upserts)
    assert (veg.confidence, veg.last_confirmed_at, city.superseded_by) == (0.8, T0, None)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Caller prefers weekday mornings", "Caller prefers mornings on weekdays"),
        ("Caller is vegetarian", "Caller says they are vegetarian"),
        ("Caller prefers café con leche", "Caller prefers cafe con leche"),
    ],
)
def test_lexical_similarity_ignores_wording(a: str, b: str) -> None:
    assert lexical_similarity(a, b) >= 0.75
