"""Merging the facts one call's analysis extracted into what is already known about the caller.

``merge_facts`` is pure: it takes the caller's stored facts and the analysis's extracted facts
and returns a ``FactMerge`` saying which facts to write and, for the call record's audit, which
ids this call wrote, confirmed and superseded. Nothing is mutated and nothing is stored here.

Rules, in the order they apply to each extracted fact:

1. The text is scrubbed (``memory.privacy.scrub.scrub_fact``); a fact that carried a secret or
   has no words left is dropped.
2. Same statement (same ``fact_id_for``) as a known fact → that fact is *confirmed*:
   ``last_confirmed_at`` refreshed, the higher confidence kept. A superseded fact stated again
   comes back to life (the caller changed their mind back) if this call is newer than its
   replacement; an older call (analysed late) leaves it superseded.
3. Near duplicate (``similar(old, new) >= threshold``) of a live fact → the old fact is
   confirmed and keeps its wording, so its id and embedding stay stable. A fact the analysis
   named in ``supersedes`` is never matched this way: the analysis said the new wording
   replaces it, and "lives at 12 Main St" vs "lives at 14 Main St" may look near-identical.
4. Otherwise → a new fact is *written* with this call as its source.
5. Each id in ``supersedes`` that names another live fact is marked ``superseded_by`` the fact
   from steps 2-4; unknown ids (hallucinated or already forgotten) are ignored. A fact under
   the confidence floor supersedes nothing: an unsure statement must not hide a fact that is
   still injected while it is itself kept out of the prompt. Confidence is not otherwise
   compared: newer information wins ("moved to Girona" replaces "lives in Barcelona").

Facts under ``CONFIDENCE_FLOOR`` are kept like any other; ``Fact.injectable`` keeps them out of
the prompt until a later call confirms them with more confidence.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from memory.models import CONFIDENCE_FLOOR, ExtractedFact, Fact, fact_id_for, now, to_ms
from memory.privacy.scrub import scrub_fact

#: ``similar(old_text, new_text)`` → 0..1; e.g. cosine similarity of two embeddings.
Similarity = Callable[[str, str], float]

#: Near-duplicate threshold for ``lexical_similarity``; an embedding similarity needs its own.
LEXICAL_THRESHOLD = 0.75

# Words that carry no content in a third-person fact ("Caller says they are …"). Negations are
# deliberately absent: "is vegetarian" and "is not vegetarian" must stay apart.
_FILLER_WORDS = frozenset(
    "caller caller's callers says said tells told mentions mentioned states stated that they "  # noqa: SIM905
    "them their he she his her is are was were be been has have had a an the of to for in on "
    "at and or with by as it its".split()
)
_WORDS = re.compile(r"[\w']+")


def _content_words(text: str) -> set[str]:
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(char for char in folded if not unicodedata.combining(char))
    words = {word.strip("'") for word in _WORDS.findall(folded)} - _FILLER_WORDS
    # A plural "s" is the commonest difference between two wordings of one fact.
    return {word[:-1] if len(word) > 3 and word.endswith("s") else word for word in words}


def lexical_similarity(a: str, b: str) -> float:
    """Jaccard similarity of the content words of two fact statements (0..1).

    Case, accents, filler words ("Caller says they are") and plural endings are ignored, so
    "Caller prefers mornings on weekdays" and "Caller says they prefer weekday mornings" match.
    """
    words_a, words_b = _content_words(a), _content_words(b)
    if not words_a or not words_b:
        return 1.0 if words_a == words_b else 0.0
    return len(words_a & words_b) / len(words_a | words_b)


@dataclass(slots=True)
class FactMerge:
    """What merging one call's facts changes.

    Attributes:
        upserts: Every fact to write, each once: new facts, confirmed facts and superseded
            facts (with ``superseded_by`` set), in the order they were first touched.
        written: Ids of the facts this call created.
        confirmed: Ids of known facts this call stated again (exactly or nearly).
        superseded: Ids of known facts this call replaced.

    """

    upserts: list[Fact] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)


def merge_facts(
    existing: Sequence[Fact],
    extracted: Sequence[ExtractedFact],
    *,
    call_id: str,
    at: float | None = None,
    similar: Similarity = lexical_similarity,
    threshold: float = LEXICAL_THRESHOLD,
) -> FactMerge:
    """Merge one call's extracted facts into the caller's known facts.

    Args:
        existing: The caller's stored facts, superseded ones included (so a fact stated again
            can be revived rather than duplicated).
        extracted: The facts the call's analysis proposed.
        call_id: The call the facts came from; becomes ``source_call_id`` of new facts.
        at: Time of the merge in epoch seconds (default: now).
        similar: Similarity of two fact texts, 0..1 (default: ``lexical_similarity``).
        threshold: ``similar`` value from which two facts are the same fact.

    Returns:
        The facts to write and the audit lists; see the module docstring for the rules.

    """
    at = to_ms(now() if at is None else at)
    facts = {fact.id: fact for fact in existing}
    known = set(facts)
    touched: list[str] = []
    merge = FactMerge()

    def update(fact: Fact) -> None:
        facts[fact.id] = fact
        if fact.id not in touched:
            touched.append(fact.id)

    for proposal in extracted:
        text = scrub_fact(proposal.text)
        if text is None:
            continue
        replaces = [
            fact_id
            for fact_id in proposal.supersedes
            if fact_id in facts and facts[fact_id].superseded_by is None
        ]
        target = facts.get(fact_id_for(text)) or _near_duplicate(
            text, facts.values(), exclude=replaces, similar=similar, threshold=threshold
        )
        if target is None:
            target = Fact(
                text=text,
                confidence=proposal.confidence,
                source_call_id=call_id,
                created_at=at,
                last_confirmed_at=at,
            )
            merge.written.append(target.id)
        else:
            target = target.model_copy(
                update={
                    "confidence": max(target.confidence, proposal.confidence),
                    "last_confirmed_at": max(target.last_confirmed_at, at),
                    "superseded_by": _still_superseded(target, facts, at),
                }
            )
            if target.id in known and target.id not in merge.confirmed:
                merge.confirmed.append(target.id)
        update(target)
        if target.confidence < CONFIDENCE_FLOOR:
            continue
        for fact_id in replaces:
            if fact_id != target.id and facts[fact_id].superseded_by is None:
                update(facts[fact_id].model_copy(update={"superseded_by": target.id}))
                merge.superseded.append(fact_id)

    merge.upserts = [facts[fact_id] for fact_id in touched]
    return merge


def _near_duplicate(
    text: str,
    candidates: Iterable[Fact],
    *,
    exclude: Sequence[str],
    similar: Similarity,
    threshold: float,
) -> Fact | None:
    """Find the live fact most similar to ``text``, if at least ``threshold`` similar."""
    scored = [
        (similar(fact.text, text), fact)
        for fact in candidates
        if fact.superseded_by is None and fact.id not in exclude
    ]
    score, fact = max(scored, key=lambda pair: pair[0], default=(0.0, None))
    return fact if fact is not None and score >= threshold else None


def _still_superseded(fact: Fact, facts: dict[str, Fact], at: float) -> str | None:
    """What still replaces a restated fact: nothing, unless the replacement is newer than ``at``."""
    replacement = facts.get(fact.superseded_by) if fact.superseded_by else None
    if replacement is None or at >= replacement.created_at:
        return None
    return fact.superseded_by
