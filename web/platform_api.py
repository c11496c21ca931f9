"""The HTTP API for voice platforms that can call a URL (VoIPBin, Retell, ElevenLabs tools...).

Version 1, under ``/v1``, with ``Authorization: Bearer <RAPPORT_API_KEY>``:

- ``POST /v1/calls``: a call starts. Rapport identifies the caller, loads their memory once
  and answers with the call's id, the memory block to put in the platform's prompt (rendered
  as the bot renders it), the system prompt with it, the opening line and the trust level.
- ``POST /v1/calls/{call_id}/turns``: finished turns, recorded as they happen.
- ``POST /v1/calls/{call_id}/end``: the call ended; it is closed and queued for analysis.

A caller id is a claim: the platform is authenticated by the key, but the number it relays is
believed (``verified``) only with the carrier's attestation it passes on (``attestation``,
STIR/SHAKEN ``TN-Validation-Passed-A``); otherwise it is ``unverified`` and served by
``RAPPORT_UNVERIFIED_CALLERS``. Open calls are kept in Redis, so any process serves any request
of a call (a bounded cache of this process's calls stands in front); turns are answered once
they are stored.
"""

from __future__ import annotations

import re
import uuid
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, Field

from bot.trust import attestation_trust
from bot.wording import opening_line
from memory.calls.session import CallSession, SessionCache
from memory.errors import InvalidIdentityError
from memory.models import CallTrust
from memory.privacy.identity import validate_agent_id
from web.auth import require_secret
from web.platform_calls import PlatformCalls

#: Longest text of one turn accepted (stored turns are capped shorter still).
MAX_TURN_CHARS = 8000
_CALL_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class StartCall(BaseModel):
    """A call that just started on the platform."""

    caller_number: str | None = Field(
        default=None,
        description="The caller id as the platform received it (E.164 or national); "
        "omitted or withheld: an anonymous call, never recorded.",
        examples=["+14155550123"],
    )
    agent: str | None = Field(
        default=None, description="The business line called (default: RAPPORT_AGENT_ID)."
    )
    platform_call_id: str | None = Field(
        default=None,
        description="The platform's id of the call; it becomes Rapport's call id, so a retried "
        "request finds the same call.",
        pattern=_CALL_ID.pattern,
    )
    attestation: str | None = Field(
        default=None,
        description="The carrier's STIR/SHAKEN verdict as the platform got it "
        "(TN-Validation-Passed-A makes the caller verified).",
    )


class CallStarted(BaseModel):
    """What the platform needs to start the conversation."""

    call_id: str
    trust: CallTrust
    remembered: bool = Field(description="Whether this call reads and writes the memory.")
    returning: bool = Field(description="Whether the caller has called this agent before.")
    language: str
    memory: str = Field(
        description="The caller's memory, a framed and escaped section for the system prompt "
        "(empty when there is none)."
    )
    system_prompt: str = Field(description="Rapport's system prompt with the memory in place.")
    opening_line: str = Field(description="What to say first, before the caller speaks.")


class TurnIn(BaseModel):
    """One finished turn."""

    role: Literal["user", "assistant"] = Field(description="user: the caller; assistant: agent.")
    text: str = Field(max_length=MAX_TURN_CHARS)


class Turns(BaseModel):
    """Finished turns of the call, in order."""

    turns: list[TurnIn] = Field(min_length=1, max_length=100)


class TurnsRecorded(BaseModel):
    """How many turns were taken for recording (0 when the call is not recorded)."""

    recorded: int


class EndCall(BaseModel):
    """How the call ended."""

    reason: str = Field(default="ended", max_length=200)


class CallEnded(BaseModel):
    """The call is closed and, when recorded, queued for analysis."""

    call_id: str
    recorded: bool


#: Which door the calls of this API come through (their key in Redis, their logs).
DOOR = "api"


def platform_router(calls: PlatformCalls, *, cache: SessionCache[CallSession]) -> APIRouter:
    """The ``/v1`` API, refusing every request without ``RAPPORT_API_KEY``.

    Args:
        calls: The agent, the process's memory.
        cache: This process's open calls, by call id.
    """
    router = APIRouter(
        prefix="/v1",
        tags=["calls"],
        dependencies=[Depends(require_secret(calls.settings.api_key or "", realm="rapport"))],
        responses={401: {"description": "Missing or wrong API key"}},
    )
    business = calls.settings.business_name

    async def open_session(call_id: str) -> CallSession:
        session = await calls.find(DOOR, call_id, cache.get(call_id))
        if session is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such open call")
        cache.put(call_id, session)
        return session

    @router.post("/calls", response_model=CallStarted, summary="A call started")
    async def start_call(body: StartCall) -> CallStarted:
        try:
            agent = validate_agent_id(body.agent) if body.agent else None
        except InvalidIdentityError as e:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=str(e)) from e
        call_id = body.platform_call_id or f"api-{uuid.uuid4().hex}"
        session = cache.get(call_id) or await calls.find(DOOR, call_id)  # a retried start
        if session is None:
            trust = (
                attestation_trust(body.attestation) if body.caller_number else CallTrust.ANONYMOUS
            )
            session = await calls.open(
                body.caller_number, call_id=call_id, trust=trust, door=DOOR, agent_id=agent
            )
        cache.put(call_id, session)
        return CallStarted(
            call_id=call_id,
            trust=session.trust,
            remembered=session.remembered,
            returning=session.memory is not None and session.memory.is_returning,
            language=session.language,
            memory=session.memory_block,
            system_prompt=session.system_prompt(calls.template),
            opening_line=opening_line(session.memory, session.language, business_name=business),
        )

    @router.post("/calls/{call_id}/turns", response_model=TurnsRecorded, summary="Turns were said")
    async def add_turns(call_id: str, body: Turns) -> TurnsRecorded:
        session = await open_session(call_id)
        if session.ended:
            raise HTTPException(status.HTTP_409_CONFLICT, detail="the call has ended")
        await session.add_turns([(turn.role, turn.text) for turn in body.turns])
        return TurnsRecorded(recorded=len(body.turns) if session.remembered else 0)

    @router.post("/calls/{call_id}/end", response_model=CallEnded, summary="The call ended")
    async def end_call(call_id: str, body: EndCall | None = None) -> CallEnded:
        session = await open_session(call_id)
        # Once, in whichever process: a retried end changes nothing.
        await calls.end(session, (body or EndCall()).reason, door=DOOR)
        return CallEnded(call_id=call_id, recorded=session.remembered)

    return router
