"""The call-start digest: what one caller's next call start needs, ready-made, in one key.

A call start needs the caller's profile (the opening line is in it), the recent turns it shows and
the few facts chosen for the agent's purpose under the token budget. Choosing those facts means
reading and ranking all of them, which grows with the caller's memory; the digest keeps the
outcome of that choice (:func:`memory.recall.ranking.call_start_facts`, the one selection) with
the profile and turns it was made beside, under the caller's hash tag (``digest``), so a call
start reads one small key whatever the caller's memory holds.

A stored digest is current: every write that changes what a call start reads bumps the caller's
``memory_version`` and deletes the digest in the write's own atomic step, and a digest is
stored only if the memory is still at the version it was built from (see
:mod:`memory.store.scripts`). So a call start reads the one key, and uses it when:

- it was built for the same :class:`CallStartSpec` (purpose, token budget, number of facts,
  embedding model) as the call start reading it;
- it is younger than :data:`MAX_AGE_S` (recency moves the ranking, slowly) and nothing in it
  has left retention meanwhile (``valid_until``).

Otherwise (or when it is missing, or cannot be read) the call start takes the bounded path
(:meth:`memory.store.callers.MemoryStore.load_candidates`) and asks the worker to rebuild the
digest. The digest expires with the caller's profile, and a forget deletes it with the rest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zlib
from dataclasses import asdict, dataclass

from loguru import logger
from pydantic import BaseModel, ValidationError

from memory.models import CallerMemory, CallerProfile, Fact, Turn

#: Longest a digest is used without a rebuild, even when nothing changed (the ranking's recency
#: weight moves the choice a little as days pass).
MAX_AGE_S = 86_400.0


@dataclass(frozen=True, slots=True)
class CallStartSpec:
    """How an agent's call start chooses facts; a digest serves only the spec it was built for.

    Attributes:
        purpose: What the agent is for (``RAPPORT_AGENT_PURPOSE``).
        token_budget: Estimated tokens the memory block may take.
        max_facts: Most facts chosen.
        embedder: The embedding model's name when the choice is dense too (None: lexical).
    """

    purpose: str
    token_budget: int
    max_facts: int
    embedder: str | None = None

    @property
    def fingerprint(self) -> str:
        """A short hash of the spec, stored in each digest built for it."""
        return _fingerprint(self)

    def to_json(self) -> str:
        """The spec as JSON (what the agent publishes for the worker)."""
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: bytes | str) -> CallStartSpec | None:
        """A published spec, or None (with a warning) if it cannot be read."""
        try:
            fields = json.loads(raw)
            return cls(
                purpose=str(fields["purpose"]),
                token_budget=int(fields["token_budget"]),
                max_facts=int(fields["max_facts"]),
                embedder=None if fields.get("embedder") is None else str(fields["embedder"]),
            )
        except (ValueError, KeyError, TypeError):
            logger.warning("Skipping a stored call-start spec that cannot be parsed")
            return None


@functools.lru_cache(maxsize=64)
def _fingerprint(spec: CallStartSpec) -> str:
    # Cached: every call start compares it, and an agent's spec does not change.
    canonical = json.dumps(asdict(spec), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class CallStartDigest(BaseModel):
    """The stored digest (facts with their short aliases, as the facts hash keeps them).

    Stored compressed (zlib, fastest level: about a third of the JSON's size, and microseconds
    to inflate); the chosen facts leave out where they came from, which no call start shows.
    """

    spec: str
    built_at: float
    valid_until: float
    profile: CallerProfile
    facts: list[Fact]
    turns: list[Turn]


def encode_digest(
    memory: CallerMemory,
    chosen: list[Fact],
    *,
    spec: CallStartSpec,
    built_at: float,
    retention_s: int,
    turns_shown: int,
) -> bytes:
    """The digest of ``memory``: the ``chosen`` facts, its profile and latest turns.

    Args:
        memory: What the choice was made from (read by ``load_candidates``).
        chosen: The facts :func:`memory.recall.ranking.call_start_facts` chose from it.
        spec: How the facts were chosen.
        built_at: Now.
        retention_s: The store's retention (0: none); the digest is stale once anything it was
            made from leaves it.
        turns_shown: The most recent turns the call start shows; the digest keeps no more
            (per-turn recall reads all of them later).
    """
    turns = memory.recent_turns[-turns_shown:] if turns_shown > 0 else []
    valid_until = built_at + MAX_AGE_S
    if retention_s:
        times = [fact.last_confirmed_at for fact in memory.facts]
        times += [turn.at for turn in turns]
        if times:
            valid_until = min(valid_until, min(times) + retention_s)
    digest = CallStartDigest(
        spec=spec.fingerprint,
        built_at=built_at,
        valid_until=valid_until,
        profile=memory.profile,
        facts=[
            fact.model_copy(update={"source_call_id": None, "source_ref": None}) for fact in chosen
        ],
        turns=turns,
    )
    return zlib.compress(digest.model_dump_json(by_alias=True, exclude_none=True).encode(), 1)


def decode_digest(raw: bytes | None, *, spec: CallStartSpec, at: float) -> CallerMemory | None:
    """The call start's memory from a stored digest, or None when it is missing or unfit.

    The memory holds the chosen facts only (``selected``), and is marked incomplete: per-turn
    recall loads the rest.
    """
    if raw is None:
        return None
    try:
        digest = CallStartDigest.model_validate_json(zlib.decompress(raw))
    except (ValidationError, ValueError, zlib.error):
        logger.warning("Skipping a stored call-start digest that cannot be parsed")
        return None
    if digest.spec != spec.fingerprint or not digest.built_at <= at < digest.valid_until:
        return None
    return CallerMemory(
        profile=digest.profile,
        facts=list(digest.facts),
        recent_turns=digest.turns,
        selected=digest.facts,
        complete=False,
    )
