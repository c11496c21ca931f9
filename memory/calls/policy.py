"""Which caller a call may remember, and how an agent takes calls: one rule for every door.

The bot (``bot.pipeline.prepare_call``) and the platform doors (:mod:`memory.calls.session`)
both decide through :func:`remembered_caller`, so a call is remembered the same way whichever
door it came through.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from loguru import logger

from memory.models import CallTrust
from memory.privacy.identity import CallerIdentity
from memory.runtime import MemoryRuntime


def remembered_caller(
    runtime: MemoryRuntime,
    number: str | None,
    *,
    agent_id: str,
    trust: CallTrust,
    serve_unverified: bool,
    door: str,
) -> CallerIdentity | None:
    """The caller whose memory a call may read and write, or None: the one rule for every door.

    A withheld or unparsable number is anonymous; a number only claimed (``unverified``) is
    served like an anonymous caller unless the business chose otherwise
    (``RAPPORT_UNVERIFIED_CALLERS=full``). Logs the decision with the masked number only.

    Args:
        runtime: The process's memory.
        number: The raw caller id, as the door received it.
        agent_id: The business line called.
        trust: How far the door could believe the number.
        serve_unverified: Whether an unverified caller gets their memory.
        door: Which door the call came through (``twilio``, ``vapi``...), for the log.
    """
    caller = runtime.identify(number, agent_id=agent_id)
    if caller is None:
        logger.info("Anonymous {} call: nothing is remembered or recorded", door)
        return None
    if trust == CallTrust.UNVERIFIED and not serve_unverified:
        logger.info(
            "Unverified {} call from {}: served without memory (RAPPORT_UNVERIFIED_CALLERS=none)",
            door,
            caller.masked,
        )
        return None
    logger.info("Call from {} ({}, {})", caller.masked, door, trust.value)
    return caller


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """How one agent takes calls from a platform: the bot's settings that matter here.

    Attributes:
        agent_id: The business line called.
        serve_unverified: Whether a caller whose number is only claimed gets their memory
            (``RAPPORT_UNVERIFIED_CALLERS=full``); otherwise they are treated as anonymous.
        purpose: What the agent is for; it steers the facts chosen at call start.
        token_budget: Estimated tokens the memory block may take.
        max_facts: Facts put in the prompt at call start.
        load_budget_s: How long the call start waits for memory before going on without it.
        default_language: The call's language until the caller's is known.
        languages: Languages the agent speaks (a caller's stored language outside them is not
            used).
    """

    agent_id: str
    serve_unverified: bool = False
    purpose: str = ""
    token_budget: int = 400
    max_facts: int = 10
    load_budget_s: float = 0.15
    default_language: str = "en"
    languages: Collection[str] = ("en",)
