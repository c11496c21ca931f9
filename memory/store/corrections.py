"""Corrections a person makes to what Rapport believes about a caller: edit or delete a fact.

An edited fact is a new statement: it passes :func:`memory.privacy.admission.admit_fact` like every
fact written by the analysis or the ``remember`` tool, replaces the old one (whose words are
deleted, not kept as history: a correction means they were wrong), and counts as confirmed now,
with full confidence, so the caller's next call is prompted with the corrected words.
"""

from __future__ import annotations

from memory.errors import RapportMemoryError
from memory.models import Fact, now
from memory.privacy.admission import Refusal, admit_fact
from memory.privacy.identity import CallerIdentity
from memory.store.callers import MemoryStore


class FactRefusedError(RapportMemoryError):
    """The new words of a fact were refused by the fact gate (:mod:`memory.privacy.admission`)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"the fact was refused ({refusal.value})")
        self.refusal = refusal


class UnknownFactError(RapportMemoryError):
    """No such fact is stored for the caller (deleted or forgotten meanwhile)."""


async def edit_fact(store: MemoryStore, caller: CallerIdentity, fact_id: str, text: str) -> Fact:
    """Replace a fact's words with ``text``, as checked by the fact gate.

    Returns:
        The fact as stored now (its id follows its new words).

    Raises:
        UnknownFactError: The fact is not stored.
        FactRefusedError: The fact gate refused the new words.
    """
    old = await _stored_fact(store, caller, fact_id)
    admission = admit_fact(text)
    if admission.text is None:
        raise FactRefusedError(admission.refusal or Refusal.EMPTY)
    edited = Fact(
        text=admission.text,
        confidence=1.0,
        source_call_id=old.source_call_id,
        created_at=old.created_at,
        last_confirmed_at=now(),
        source_ref=old.source_ref,
    )
    await store.upsert_facts(caller, [edited])
    if edited.id != old.id:
        await store.delete_facts(caller, [old.id])
    return edited


async def delete_fact(store: MemoryStore, caller: CallerIdentity, fact_id: str) -> None:
    """Delete one fact and its embedding.

    Raises:
        UnknownFactError: The fact is not stored.
    """
    await _stored_fact(store, caller, fact_id)
    await store.delete_facts(caller, [fact_id])


async def _stored_fact(store: MemoryStore, caller: CallerIdentity, fact_id: str) -> Fact:
    for fact in await store.all_facts(caller):
        if fact.id == fact_id:
            return fact
    raise UnknownFactError("no such fact")
