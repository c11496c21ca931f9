"""What Rapport remembers about a caller, as records.

Pydantic models sit at the storage boundary: every value written to or read from Redis goes
through one of them, so a malformed stored value is rejected by validation instead of leaking
into a prompt. ``CallerMemory`` is the in-process bundle one call loads.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_serializer,
)

from memory.report import CallReport

#: Facts below this confidence are kept but never injected into a prompt.
CONFIDENCE_FLOOR = 0.5
#: Longest text kept for one turn or fact; longer input is truncated, never rejected.
MAX_TEXT_CHARS = 2000
#: Longest fact statement.
MAX_FACT_CHARS = 280
#: Longest opening line the analysis may prepare for the next call (about 25 spoken words).
MAX_OPENING_CHARS = 240

_SPACES = re.compile(r"\s+")

# Constraints checked by pydantic-core itself: a call's memory is validated on every load, so
# stored models carry no Python validators. Collapsing whitespace and capping length happen where
# text comes in (``clean_text`` in the recorder, the tools and the analysis).
_Words = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
_Text = Annotated[str, StringConstraints(strip_whitespace=True)]

#: A value of one of the business's own analysis fields (see ``memory.analysis.fields``), as stored:
#: text, a number, true/false, a list of text; dates and times as ISO text.
FieldValue = StrictBool | StrictInt | StrictFloat | StrictStr | list[StrictStr]


def now() -> float:
    """Current wall-clock time in epoch seconds (the unit of every timestamp here)."""
    return time.time()


def to_ms(epoch: float) -> float:
    """A timestamp rounded to the millisecond: stored JSON stays short and nothing needs more."""
    return round(epoch, 3)


def valid_text(text: str) -> str:
    """``text`` as valid UTF-8: lone surrogates (and anything else unencodable) become ``?``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def clean_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Collapse whitespace and cap the length of free text from a caller or an LLM."""
    return valid_text(_SPACES.sub(" ", text[: 2 * limit + 64]).strip()[:limit])


def fact_id_for(text: str) -> str:
    """Stable id of a fact: the same words (case, spacing, final dot aside) give one id."""
    canonical = clean_text(text).lower().rstrip(".!")
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Sentiment(StrEnum):
    """How the caller came across on a call."""

    SATISFIED = "satisfied"
    NEUTRAL = "neutral"
    FRUSTRATED = "frustrated"


class StoredModel(BaseModel):
    """Base for stored records: unknown fields from newer versions are ignored, not fatal."""

    model_config = ConfigDict(extra="ignore")


class CallerProfile(StoredModel):
    """The durable summary of one caller for one agent."""

    name: str | None = None
    language: str | None = None
    last_sentiment: Sentiment | None = None
    last_summary: str | None = None
    last_action: str | None = None
    urgency: int | None = Field(default=None, ge=1, le=5)
    call_count: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    #: Masked caller number (``+1•••34``) for lists and screens; never the raw number.
    masked_number: str | None = None
    #: What the agent says first on this caller's next call, written by the last analysis
    #: (empty: none prepared, the greeting template is used).
    opening_line: str | None = None


class Fact(StoredModel):
    """A short third-person statement about the caller ("Caller is vegetarian").

    Stored JSON uses the short aliases (a caller keeps dozens of facts); everything else, exports
    included, uses the field names.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = ""
    text: _Words = Field(alias="t")
    confidence: float = Field(default=0.8, ge=0.0, le=1.0, alias="c")
    source_call_id: str | None = Field(default=None, alias="call")
    created_at: float = Field(default_factory=now, alias="ca")
    last_confirmed_at: float = Field(default_factory=now, alias="lc")
    #: Id of the newer fact that replaced this one; superseded facts are kept, not loaded.
    superseded_by: str | None = Field(default=None, alias="sup")
    #: Where the fact came from when it is not a call (e.g. a LoCoMo dialogue id in benchmarks).
    source_ref: str | None = Field(default=None, alias="ref")
    #: Compact embedding (see ``memory.recall.embeddings``); stored beside the JSON, not inside it.
    embedding: bytes | None = Field(default=None, exclude=True, repr=False)

    @field_serializer("created_at", "last_confirmed_at")
    def _round(self, epoch: float) -> float:
        return to_ms(epoch)

    def model_post_init(self, _context: object) -> None:
        """Derive the id from the text when none was given."""
        if not self.id:
            self.id = fact_id_for(self.text)

    def stored_json(self) -> str:
        """The compact JSON Redis keeps (the id is its hash field, the embedding stored apart)."""
        return self.model_dump_json(by_alias=True, exclude={"id"}, exclude_none=True)

    @property
    def injectable(self) -> bool:
        """Whether this fact may be put in front of the LLM."""
        return self.superseded_by is None and self.confidence >= CONFIDENCE_FLOOR


class Turn(StoredModel):
    """One utterance of a call, by the caller (``user``) or the agent (``assistant``)."""

    #: The caller's turn number, given by the store as the turn is appended (a sequence, not
    #: the clock: two turns said in one millisecond still differ). None until stored, and for
    #: turns stored before there was one. First, so the stored JSON begins with it.
    seq: int | None = None
    role: Literal["user", "assistant"]
    text: _Text
    at: float = Field(default_factory=now)
    call_id: str | None = None

    @field_serializer("at")
    def _round(self, epoch: float) -> float:
        return to_ms(epoch)


class FactKind(StrEnum):
    """What sort of statement an extracted fact is, as the post-call analysis classifies it."""

    PREFERENCE = "preference"
    CONSTRAINT = "constraint"
    IDENTIFIER = "identifier"
    COMMITMENT = "commitment"
    NEED = "need"
    OTHER = "other"
    #: Ownership, staff or manager roles over the business, free or discounted service, waived
    #: fees, standing instructions to the agent: never stored (see ``memory.privacy.admission``).
    AUTHORITY_CLAIM = "authority_claim"


class ExtractedFact(StoredModel):
    """A fact as the post-call analysis proposes it."""

    text: str = Field(min_length=1, max_length=MAX_FACT_CHARS)
    confidence: float = Field(ge=0.0, le=1.0)
    #: Older call records were written before facts had a kind: they load as ``other``.
    kind: FactKind = Field(
        default=FactKind.OTHER,
        description="What sort of statement this is; authority_claim facts are never stored.",
    )
    #: Ids of existing facts this one repeats or replaces.
    supersedes: list[str] = Field(default_factory=list)


class CallAnalysis(StoredModel):
    """What the post-call analysis concluded about one call."""

    summary: str = Field(min_length=1, max_length=600)
    urgency: int = Field(ge=1, le=5)
    action: str
    sentiment: Sentiment
    language: str = Field(min_length=2, max_length=35)
    caller_name: str | None = Field(default=None, max_length=80)
    facts: list[ExtractedFact] = Field(default_factory=list, max_length=5)
    #: The first words of the caller's next call, in their language (spoken with no LLM run).
    #: Not length-checked here: an overlong line is dropped, not a reason to fail the analysis.
    opening_line: str | None = None
    #: The business's own fields (``memory.analysis.fields``) the call gave a valid value, by name.
    fields: dict[str, FieldValue] = Field(default_factory=dict)
    #: Why each invalid value the analysis gave was dropped, by field name.
    dropped_fields: dict[str, str] = Field(default_factory=dict)


class CallTrust(StrEnum):
    """How far the caller id of a call can be believed.

    A phone number is a claim: ``verified`` when the network attested it (STIR/SHAKEN level A)
    or the call came through a channel the business controls (the local test room on loopback);
    ``unverified`` when it is only claimed (attestation B, C, failed or absent); ``anonymous``
    when there is no usable number at all.
    """

    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    ANONYMOUS = "anonymous"


class CallStatus(StrEnum):
    """Where a call is in its life: taking turns, waiting for analysis, or analysed."""

    OPEN = "open"
    ENDED = "ended"
    ANALYSED = "analysed"
    FAILED = "failed"


#: How a call is ended when a cloud service it needs failed: ``failed: stt unavailable``.
SERVICE_FAILED = "failed: {service} unavailable"


def service_failed(service: str) -> str:
    """The ended reason of a call cut short by ``service`` (``stt``, ``tts``, ``llm``) failing."""
    return SERVICE_FAILED.format(service=service)


def is_service_failure(reason: str | None) -> bool:
    """True for an ended reason made by :func:`service_failed`."""
    return reason is not None and reason.startswith(SERVICE_FAILED.partition("{")[0])


class CallTransfer(StoredModel):
    """The caller was handed to a person: to whom (a masked number or a SIP address) and why."""

    target: str
    reason: str
    at: float = Field(default_factory=now)


class CallRecord(StoredModel):
    """One call: transcript, timings, how it ended, its analysis and its memory audit."""

    call_id: str
    agent_id: str
    status: CallStatus = CallStatus.ENDED
    started_at: float = Field(default_factory=now)
    ended_at: float | None = None
    ended_reason: str | None = None
    #: The language the call ended in, as the bot heard it (a primary subtag: ``es``).
    language: str | None = None
    transcript: list[Turn] = Field(default_factory=list)
    analysis: CallAnalysis | None = None
    facts_written: list[str] = Field(default_factory=list)
    facts_confirmed: list[str] = Field(default_factory=list)
    facts_superseded: list[str] = Field(default_factory=list)
    #: Masked caller number, so a follow-up list can be shown without the profile.
    masked_number: str | None = None
    #: How far the caller id was believed (None: recorded before trust levels existed).
    trust: CallTrust | None = None
    #: Set when the agent put the caller through to a person.
    transfer: CallTransfer | None = None
    error: str | None = None
    #: Latency, usage and cost, written when the call closed (None: recorded before reports).
    report: CallReport | None = None

    @property
    def cut_short(self) -> bool:
        """True when a service of ours failed the caller (:func:`service_failed`)."""
        return is_service_failure(self.ended_reason)


@dataclass(slots=True)
class CallerMemory:
    """Everything one call loads about its caller, in one round trip.

    Attributes:
        profile: The caller's profile.
        facts: Their facts within retention that may be injected, most recently confirmed first.
        recent_turns: The most recent turns within retention, oldest first.
        selected: The facts the call start chose, when they came ready-made from the caller's
            call-start digest (see :mod:`memory.store.digest`); ``facts`` then holds only them.
        complete: False when ``facts`` holds only part of them (a call start reads what its
            selection needs): per-turn recall then loads the rest.
    """

    profile: CallerProfile = field(default_factory=CallerProfile)
    facts: list[Fact] = field(default_factory=list)
    recent_turns: list[Turn] = field(default_factory=list)
    selected: list[Fact] | None = None
    complete: bool = True

    @property
    def is_empty(self) -> bool:
        """True for a first-time caller (nothing worth rendering)."""
        return (
            self.profile.call_count == 0
            and not self.facts
            and not self.recent_turns
            and self.profile.name is None
        )

    @property
    def is_returning(self) -> bool:
        """True when the caller has called this agent before."""
        return self.profile.call_count > 0 or bool(self.recent_turns)
