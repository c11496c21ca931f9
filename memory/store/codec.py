"""How a caller's memory is encoded in Redis, and parsed back.

Parsing is most of a load's CPU, so lists are validated in one call each, a slice at a time;
a stored value that cannot be parsed is skipped with a warning naming its kind and left in
place, never overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

import msgspec
import numpy as np
from loguru import logger
from pydantic import BaseModel, TypeAdapter, ValidationError

from memory.models import CONFIDENCE_FLOOR, CallerProfile, CallRecord, Fact, Turn, valid_text

#: Facts parsed on the event loop at most; a caller with more is parsed in a thread.
PARSE_INLINE_FACTS = 1000

_M = TypeVar("_M", bound=BaseModel)
# One validation call per list instead of one per item: most of a load's CPU is parsing.
_LIST_ADAPTERS: dict[type[BaseModel], TypeAdapter[Any]] = {
    Fact: TypeAdapter(list[Fact]),
    Turn: TypeAdapter(list[Turn]),
}


def parse_one(model: type[_M], raw: bytes | str, *, what: str) -> _M | None:
    """One stored value as ``model``, or None (with a warning naming ``what``) if it is bad."""
    try:
        return model.model_validate_json(raw)
    except (ValidationError, ValueError):
        logger.warning("Skipping a stored {} that cannot be parsed", what)
        return None


def parse_all(model: type[_M], raws: Sequence[bytes], *, what: str) -> list[_M | None]:
    """Validate many stored values in one call (one per value only if some are bad).

    Returns:
        One entry per raw value, None where it failed validation.
    """
    try:
        return _LIST_ADAPTERS[model].validate_json(b"[" + b",".join(raws) + b"]")
    except (ValidationError, ValueError):
        return [parse_one(model, raw, what=what) for raw in raws]


def parse_profile(raw: dict[bytes, bytes]) -> CallerProfile:
    """A stored profile hash; fields that are not valid are left out, not the whole profile."""
    fields: dict[str, str] = {}
    for name, value in raw.items():
        try:
            fields[name.decode()] = value.decode()
        except UnicodeDecodeError:
            logger.warning("Skipping a stored caller profile field that is not valid UTF-8")
    try:
        return CallerProfile.model_validate(fields)
    except ValidationError as e:
        # Keep the fields that are valid: one bad field must not cost the name or summary.
        bad = {str(error["loc"][0]) for error in e.errors() if error["loc"]}
        logger.warning("Skipping {} stored caller profile fields that failed validation", len(bad))
        try:
            return CallerProfile.model_validate({k: v for k, v in fields.items() if k not in bad})
        except ValidationError:
            return CallerProfile()


def parse_facts(raw: dict[bytes, bytes], embeddings: dict[bytes, bytes]) -> list[Fact]:
    """Stored facts (hash field = id) with their stored vectors; unparsable ones skipped."""
    ids = list(raw)
    # The id is the hash field, not in the stored JSON: splice it in (cheaper than hashing
    # the text again). A malformed value fails the batch and is skipped one by one.
    payloads = [b'{"id":"' + json_safe(fact_id) + b'",' + raw[fact_id][1:] for fact_id in ids]
    # Validated a slice at a time: pydantic holds the GIL through one call, and a caller with
    # thousands of facts must not stall the event loop past the call-start budget.
    parsed = [
        fact
        for start in range(0, len(payloads), PARSE_INLINE_FACTS)
        for fact in parse_all(Fact, payloads[start : start + PARSE_INLINE_FACTS], what="fact")
    ]
    facts = []
    for fact_id, fact in zip(ids, parsed, strict=True):
        if fact is not None:
            fact.embedding = embeddings.get(fact_id)
            facts.append(fact)
    return facts


class _Ranked(msgspec.Struct, gc=False):
    """What choosing candidates needs of a stored fact, and nothing else.

    Not tracked by the garbage collector: reading ten thousand of them allocates nothing a
    collection would scan, so a read this size cannot set off a full collection (which holds the
    GIL for as long as the process's whole heap takes to scan).
    """

    c: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.8
    lc: float = 0.0
    sup: str | None = None


_RANKED = msgspec.json.Decoder(list[_Ranked])
_RANKED_ONE = msgspec.json.Decoder(_Ranked)


def _ranked(values: list[bytes]) -> list[_Ranked | None]:
    try:
        return list(_RANKED.decode(b"[" + b",".join(values) + b"]"))
    except msgspec.DecodeError:
        # One bad value fails the batch: decode them one by one, skipping the bad ones.
        ranked: list[_Ranked | None] = []
        for value in values:
            try:
                ranked.append(_RANKED_ONE.decode(value))
            except msgspec.DecodeError:
                ranked.append(None)
        return ranked


def candidate_facts(
    raw: dict[bytes, bytes], *, cutoff: float, count: int
) -> tuple[dict[bytes, bytes], int]:
    """The stored facts a call start ranks: the ``count`` most confident and recent.

    The same facts, in the same order, as loading every fact, keeping the injectable ones within
    retention most recently confirmed first, and taking the ``count`` best by (confidence,
    last confirmed) as :meth:`memory.recall.ranking.RecallIndex.from_memory` does; but only
    confidence, time and supersession are read from each, and only the candidates are then
    validated in full.

    Returns:
        The candidates' raw values by fact id (most recently confirmed first), and how many
        facts were eligible in all.
    """
    ids = list(raw)
    eligible: list[int] = []
    confirmed_at: list[float] = []
    confidences: list[float] = []
    for index, fact in enumerate(_ranked(list(raw.values()))):
        if (
            fact is not None
            and fact.sup is None
            and fact.c >= CONFIDENCE_FLOOR
            and fact.lc >= cutoff
        ):
            eligible.append(index)
            confirmed_at.append(fact.lc)
            confidences.append(fact.c)
    confirmed = np.array(confirmed_at, dtype=np.float64)
    confidence = np.array(confidences, dtype=np.float64)
    # Most recently confirmed first (stable, as the loaded list is sorted).
    by_time = np.argsort(-confirmed, kind="stable")
    kept = by_time
    if len(eligible) > count:
        # Then the best by (confidence, confirmed), ties in that order (as heapq.nlargest).
        best = by_time[np.lexsort((-confirmed[by_time], -confidence[by_time]))[:count]]
        chosen = np.zeros(len(eligible), dtype=bool)
        chosen[best] = True
        kept = by_time[chosen[by_time]]
    return {ids[eligible[index]]: raw[ids[eligible[index]]] for index in kept}, len(eligible)


def parse_turns(raws: Sequence[bytes]) -> list[Turn]:
    """Stored turns, unparsable ones skipped."""
    return [turn for turn in parse_all(Turn, raws, what="turn") if turn is not None]


def profile_update(record: CallRecord) -> dict[str, str]:
    """The profile fields an analysed call replaces (empty before analysis)."""
    analysis = record.analysis
    if analysis is None:
        return {}
    fields = {
        "language": analysis.language,
        "last_sentiment": analysis.sentiment.value,
        "last_summary": analysis.summary,
        "last_action": analysis.action,
        "urgency": str(analysis.urgency),
        # Replaced by every analysis, so a stale line is never spoken: empty means the template.
        "opening_line": analysis.opening_line or "",
    }
    if analysis.caller_name:
        fields["name"] = analysis.caller_name
    return fields


def turn_json(turn: Turn) -> str:
    """A turn's stored JSON (the transcript key names the call), its text valid UTF-8."""
    text = valid_text(turn.text)
    stored = turn if text == turn.text else turn.model_copy(update={"text": text})
    return stored.model_dump_json(exclude={"call_id"}, exclude_none=True)


def json_safe(field: bytes) -> bytes:
    """A hash field spliced into JSON: quotes and backslashes escaped (a foreign field is data)."""
    return field.replace(b"\\", b"\\\\").replace(b'"', b'\\"')


def json_value(raw: bytes) -> Any:
    """A stored key-value memory value, or None (with a warning) if it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError:
        logger.warning("Skipping a stored value that cannot be parsed")
        return None
