"""The call start's memory: the caller's digest when it is current, else the bounded path.

:func:`load_call_start` is what a call start awaits (the bot's prefetch, a platform's call):
one small read of the caller's call-start digest (:mod:`memory.store.digest`); when that is
missing or stale, the bounded read of what the selection needs
(:meth:`memory.store.callers.MemoryStore.load_candidates`), after which the worker is asked to
rebuild the digest. Either way the facts are then chosen by
:func:`memory.recall.ranking.call_start_facts`, which returns a digest's choice as it is: the
digest only stores what that one selection chose, so both paths render the same block.

:func:`rebuild_digest` is the worker's side: the bounded read, the same selection, and a write
that lands only if the memory did not change meanwhile.
"""

from __future__ import annotations

import asyncio

from memory.models import CallerMemory, now
from memory.privacy.identity import CallerIdentity
from memory.recall.embeddings import Embedder
from memory.recall.ranking import MAX_CALL_START_CANDIDATES, call_start_facts, warm_purpose
from memory.recall.render import RECENT_TURNS_SHOWN
from memory.recall.turns import MAX_RECALL_FACTS
from memory.store.callers import MemoryStore
from memory.store.digest import CallStartSpec, encode_digest


def call_start_spec(
    *, purpose: str, token_budget: int, max_facts: int, embedder: Embedder | None
) -> CallStartSpec:
    """The spec of a call start choosing ``max_facts`` facts for ``purpose`` with ``embedder``."""
    return CallStartSpec(
        purpose=purpose,
        token_budget=token_budget,
        max_facts=max_facts,
        embedder=embedder.name if embedder is not None else None,
    )


async def load_call_start(
    store: MemoryStore, caller: CallerIdentity, spec: CallStartSpec
) -> CallerMemory:
    """The memory a call start renders from: the digest's, or the bounded read's.

    Raises:
        MemoryUnavailableError: Redis did not answer.
    """
    memory = await store.read_digest(caller, spec)
    if memory is not None:
        return memory
    memory, _ = await store.load_candidates(
        caller, count=MAX_CALL_START_CANDIDATES, vectors=spec.embedder is not None
    )
    await store.request_digest(caller, spec)
    return memory


async def load_for_recall(
    store: MemoryStore, caller: CallerIdentity, embedder: Embedder | None
) -> CallerMemory:
    """What per-turn recall indexes, read after the call start: the facts it keeps at most.

    The same facts :class:`memory.recall.turns.TurnRecall` would keep of a full load, with
    their vectors when there is an embedder; a caller with thousands of facts costs no more.
    """
    memory, _ = await store.load_candidates(
        caller, count=MAX_RECALL_FACTS, vectors=embedder is not None
    )
    return memory


async def rebuild_digest(
    store: MemoryStore, caller: CallerIdentity, embedder: Embedder | None
) -> bool:
    """Bring a caller's call-start digest up to date for their agent's spec.

    Does nothing when the digest is current, the agent never said how it chooses facts, or it
    chooses with another embedding model than ``embedder``.

    Returns:
        True when a new digest was stored.
    """
    spec = await store.call_start_spec(caller.agent_id)
    if spec is None or await store.read_digest(caller, spec) is not None:
        return False
    if spec.embedder is None:
        embedder = None
    elif embedder is None or embedder.name != spec.embedder:
        return False
    else:
        # Embeds the purpose once per process; call starts only use it warmed.
        await asyncio.to_thread(warm_purpose, embedder, spec.purpose)
    memory, version = await store.load_candidates(
        caller, count=MAX_CALL_START_CANDIDATES, vectors=embedder is not None
    )
    chosen = await asyncio.to_thread(
        call_start_facts,
        memory,
        purpose=spec.purpose,
        token_budget=spec.token_budget,
        max_facts=spec.max_facts,
        embedder=embedder,
    )
    digest = encode_digest(
        memory,
        chosen,
        spec=spec,
        built_at=now(),
        retention_s=store.ttl_seconds,
        turns_shown=RECENT_TURNS_SHOWN,
    )
    return await store.write_digest(caller, version=version, digest=digest)
