"""The follow-up list (``/dashboard``): one card per caller, and marking a card done."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from memory.analysis.followups import FollowUp, follow_up_page, mark_follow_up_done
from memory.models import CallRecord, now
from memory.privacy.identity import CallerIdentity
from memory.privacy.scrub import scrub_turns
from memory.store.audit import AuditAction
from memory.store.callers import MemoryStore
from web.dashboard.context import PAGE_SIZE, PREFIX, PageContext, PageRouter, back

#: The follow-up list's periods, by the name the filter shows.
PERIODS = {"24h": 86_400.0, "7d": 7 * 86_400.0, "30d": 30 * 86_400.0, "all": None}
DEFAULT_PERIOD = "30d"
#: Words of a call's transcript shown when it has no analysis to summarise it.
PREVIEW_WORDS = 20


@dataclass(slots=True)
class FollowUpCard:
    """A caller's follow-ups on one page: their most pressing call, then the others.

    Attributes:
        caller: Who to follow up with.
        record: The most urgent (then newest) call, which the card is about.
        others: The caller's other calls to follow up, most urgent first.
        previews: The first words the caller said, by call id, for calls with no analysis to
            summarise them.
    """

    caller: CallerIdentity
    record: CallRecord
    others: list[CallRecord] = field(default_factory=list)
    previews: dict[str, str] = field(default_factory=dict)

    @property
    def call_ids(self) -> list[str]:
        """Every call on the card, the main one first."""
        return [self.record.call_id, *(other.call_id for other in self.others)]


def cards(items: Sequence[FollowUp]) -> list[FollowUpCard]:
    """One card per caller, in the order of each caller's first (most pressing) follow-up."""
    by_caller: dict[str, FollowUpCard] = {}
    for item in items:
        card = by_caller.get(item.caller.key)
        if card is None:
            by_caller[item.caller.key] = FollowUpCard(caller=item.caller, record=item.record)
        else:
            card.others.append(item.record)
    return list(by_caller.values())


def preview(record: CallRecord) -> str:
    """The first words the caller said (redacted), for a call with no summary to show."""
    said = " ".join(turn.text for turn in scrub_turns(record.transcript) if turn.role == "user")
    words = said.split()
    return " ".join(words[:PREVIEW_WORDS]) + (" …" if len(words) > PREVIEW_WORDS else "")


async def with_previews(store: MemoryStore, card: FollowUpCard) -> FollowUpCard:
    """``card`` with the previews of its unanalysed calls.

    Their transcripts are read one call at a time: a page lists few calls without analysis.
    """
    for record in (card.record, *card.others):
        if record.analysis is None:
            full = await store.get_call(card.caller, record.call_id)
            card.previews[record.call_id] = preview(full) if full is not None else ""
    return card


def router(context: PageContext) -> PageRouter:
    """The follow-up list, filtered by action and period, and its *Mark done* button."""
    routes = PageRouter()

    @routes.page("")
    async def followups_page(
        request: Request, action: str = "", period: str = DEFAULT_PERIOD, page: int = 1
    ) -> Any:
        session = context.signed_in(request)
        mem = context.need_memory()
        period = period if period in PERIODS else DEFAULT_PERIOD
        seconds = PERIODS[period]
        number = max(page, 1)
        items = await follow_up_page(
            mem.store,
            mem.agent_id,
            since=now() - seconds if seconds else 0.0,
            action=action or None,
            offset=(number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE + 1,
        )
        return context.render(
            request,
            "followups.html",
            session,
            cards=[await with_previews(mem.store, card) for card in cards(items[:PAGE_SIZE])],
            actions=await mem.store.followups.actions(mem.agent_id),
            action=action,
            period=period,
            periods=list(PERIODS),
            page=number,
            more=len(items) > PAGE_SIZE,
        )

    @routes.post("/calls/{caller_key}/{call_id}/done")
    async def follow_up_done(request: Request, caller_key: str, call_id: str) -> Any:
        session, form = await context.posted(request)
        mem = context.need_memory()
        caller = await context.caller_of(mem, caller_key)
        # The card's other calls of the same caller ("also"): only calls of theirs that exist.
        also = {other for other in form.get("also", "").split(",")[:PAGE_SIZE] if other} - {call_id}
        calls = [call_id, *[other for other in also if await mem.store.get_call(caller, other)]]
        for done in calls:
            await mark_follow_up_done(mem.store, caller, done, by=session.user)
            await context.audit(mem, session, AuditAction.FOLLOW_UP_DONE, caller, call_id=done)
        return back(local(form.get("next", "")))

    return routes


def local(url: str) -> str:
    """``url`` when it is a dashboard page of this server, else the follow-up list."""
    path = url.split("?", 1)[0]
    return url if path in (PREFIX, f"{PREFIX}/") and "\\" not in url else PREFIX
