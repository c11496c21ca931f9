"""The post-call analysis: one LLM request per call, answered through a forced tool call.

``CallAnalyzer.analyse`` sends the scrubbed, capped transcript and the caller's known facts to
the Anthropic Messages API (any base URL: the real API or the local fake), forces the answer
through the ``record_call_analysis`` tool whose input schema is generated from
``memory.models.CallAnalysis``, validates it with pydantic and returns a ``CallAnalysis``.

The transcript is untrusted: it goes in as escaped data between ``<transcript>`` tags, the
system prompt says so, the LLM gives each fact a kind (``authority_claim`` is never stored), and
``memory.privacy.admission.admit_fact``, the gate the ``remember`` tool passes too, drops any fact
that claims authority, privileges or instructions whatever kind the LLM gave it. Summary and facts
are scrubbed again on the way out, since the LLM may paraphrase a secret the transcript scrub
did not see.

The business's own fields (``memory.analysis.fields``) go into the tool schema as one ``fields``
object and are validated apart from Rapport's: an invalid value is dropped with its reason
(``CallAnalysis.dropped_fields``), never failing the analysis.

Errors are classified, not retried: retries with backoff are the worker's job. See
``memory.errors``: ``RetryableAnalysisError`` (with the server's ``retry_after``),
``InvalidAnalysisError`` (retry a few times) and ``PermanentAnalysisError`` (do not retry).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import anthropic
from anthropic.types import ToolParam
from pydantic import ValidationError

from memory.analysis.fields import AnalysisFields
from memory.analysis.prompts import DEFAULT_ACTIONS, OWN_FIELDS_PROMPT, SYSTEM_PROMPT, USER_PROMPT
from memory.errors import (
    ConfigurationError,
    InvalidAnalysisError,
    PermanentAnalysisError,
    RetryableAnalysisError,
)
from memory.models import (
    MAX_OPENING_CHARS,
    CallAnalysis,
    CallTransfer,
    ExtractedFact,
    Fact,
    Turn,
    clean_text,
)
from memory.privacy.admission import admit_fact
from memory.privacy.scrub import scrub, scrub_turns
from memory.recall.render import quoted
from memory.report import AnalysisUsage

TOOL_NAME = "record_call_analysis"
#: Transcript characters sent to the LLM (about 6k tokens); longer ones keep head and tail.
DEFAULT_MAX_TRANSCRIPT_CHARS = 24_000
#: Known facts shown to the LLM, most recently confirmed first.
MAX_PROMPT_FACTS = 50
#: Most words of the opening line prepared for the next call (asked for: 25).
MAX_OPENING_WORDS = 30

_SPEAKERS = {"user": "Caller", "assistant": "Agent"}

_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=\S)")
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")


def analysis_client(
    *, api_key: str, base_url: str | None = None, timeout: float = 30.0
) -> anthropic.AsyncAnthropic:
    """Build the ``AsyncAnthropic`` client the analyzer expects: no SDK-side retries.

    Args:
        api_key: Anthropic API key (any string for the local fake).
        base_url: API base URL; None for the SDK default (``ANTHROPIC_BASE_URL`` or the real API).
        timeout: Seconds one request may take before it fails as retryable.

    Returns:
        An ``anthropic.AsyncAnthropic``; the worker owns retries, so ``max_retries=0``.

    """
    return anthropic.AsyncAnthropic(
        api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0
    )


class CallAnalyzer:
    """Turns one call's transcript into a validated ``CallAnalysis`` with one LLM request."""

    def __init__(
        self,
        *,
        client: anthropic.AsyncAnthropic,
        model: str,
        actions: Sequence[str] = DEFAULT_ACTIONS,
        max_transcript_chars: int = DEFAULT_MAX_TRANSCRIPT_CHARS,
        max_tokens: int = 1024,
        fields: AnalysisFields | None = None,
    ) -> None:
        """Configure the analyzer.

        Args:
            client: The Anthropic client, built with ``max_retries=0`` (see ``analysis_client``).
            model: Model name, e.g. a current Claude Haiku.
            actions: The follow-up actions the business uses; the answer must pick one.
            max_transcript_chars: Longest transcript sent; longer ones keep head and tail.
            max_tokens: Output token cap of the answer.
            fields: The business's own fields to fill in (``RAPPORT_ANALYSIS_FIELDS``).

        Raises:
            ConfigurationError: No actions, or a transcript budget too small to be useful.

        """
        if not actions or not all(action.strip() for action in actions):
            raise ConfigurationError("the analysis needs at least one named action")
        if max_transcript_chars < 1000:
            raise ConfigurationError("max_transcript_chars must be at least 1000")
        self._client = client
        self._model = model
        self._actions = tuple(dict.fromkeys(actions))
        self._max_transcript_chars = max_transcript_chars
        self._max_tokens = max_tokens
        self._fields = fields or AnalysisFields()
        self._tool = self._tool_definition()

    async def analyse(
        self,
        *,
        transcript: Sequence[Turn],
        existing_facts: Sequence[Fact],
        business: str | None = None,
        transfer: CallTransfer | None = None,
    ) -> CallAnalysis:
        """Analyse one finished call (:meth:`analyse_with_usage` without the usage)."""
        analysis, _ = await self.analyse_with_usage(
            transcript=transcript,
            existing_facts=existing_facts,
            business=business,
            transfer=transfer,
        )
        return analysis

    async def analyse_with_usage(
        self,
        *,
        transcript: Sequence[Turn],
        existing_facts: Sequence[Fact],
        business: str | None = None,
        transfer: CallTransfer | None = None,
    ) -> tuple[CallAnalysis, AnalysisUsage]:
        """Analyse one finished call; also the tokens the request used.

        Args:
            transcript: The call's turns, in order (scrubbed here before they are sent).
            existing_facts: The caller's known facts; superseded ones are left out of the prompt.
            business: Who the agent answers for ("Bella's Bakery, Barcelona"), if known.
            transfer: The agent put the caller through to a person (the summary says so).

        Returns:
            The validated analysis, with summary and facts scrubbed and authority claims gone,
            and the request's token usage (``message.usage``).

        Raises:
            RetryableAnalysisError: Timeout, connection failure, 429, 5xx or overloaded.
            InvalidAnalysisError: The answer is missing, cut off or fails validation.
            PermanentAnalysisError: The request was refused (e.g. bad key, bad request).

        """
        try:
            message = await self._client.messages.create(
                model=self._model,
                max_tokens=self._max_tokens,
                system=SYSTEM_PROMPT.format(
                    business=clean_text(business or "", 200) or "a business",
                    tool=TOOL_NAME,
                    actions=", ".join(self._actions),
                    own_fields=OWN_FIELDS_PROMPT if self._fields else "",
                ),
                messages=[
                    {
                        "role": "user",
                        "content": self._user_prompt(transcript, existing_facts, transfer),
                    }
                ],
                tools=[self._tool],
                tool_choice={"type": "tool", "name": TOOL_NAME},
            )
        except anthropic.AnthropicError as error:
            raise _classify(error) from error
        if message.stop_reason == "max_tokens":
            raise InvalidAnalysisError("the analysis answer was cut off at max_tokens")
        answer = next(
            (
                block.input
                for block in message.content
                if block.type == "tool_use" and block.name == TOOL_NAME
            ),
            None,
        )
        if not isinstance(answer, dict):
            raise InvalidAnalysisError(f"the answer has no {TOOL_NAME} call")
        usage = AnalysisUsage(
            model=self._model,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            cache_read_tokens=message.usage.cache_read_input_tokens or 0,
            cache_write_tokens=message.usage.cache_creation_input_tokens or 0,
        )
        return self._validated(answer), usage

    def _tool_definition(self) -> ToolParam:
        schema = CallAnalysis.model_json_schema()
        schema["properties"]["action"]["enum"] = list(self._actions)
        schema["required"] = ["summary", "urgency", "action", "sentiment", "language", "facts"]
        # Rapport's bookkeeping, never the LLM's; the fields object is the business's own.
        del schema["properties"]["dropped_fields"], schema["properties"]["fields"]
        if self._fields:
            schema["properties"]["fields"] = self._fields.tool_schema()
            schema["required"].append("fields")
        # Required of the LLM; records written before facts had a kind still validate.
        schema["$defs"]["ExtractedFact"]["required"] = ["text", "kind", "confidence"]
        return {
            "name": TOOL_NAME,
            "description": "Record the analysis of one finished phone call.",
            "input_schema": schema,
        }

    def _user_prompt(
        self,
        transcript: Sequence[Turn],
        existing_facts: Sequence[Fact],
        transfer: CallTransfer | None = None,
    ) -> str:
        live = sorted(
            (fact for fact in existing_facts if fact.superseded_by is None),
            key=lambda fact: fact.last_confirmed_at,
            reverse=True,
        )[:MAX_PROMPT_FACTS]
        facts = "\n".join(
            f"- id={fact.id} (confidence {fact.confidence:.2f}): {quoted(fact.text)}"
            for fact in live
        )
        lines = "\n".join(
            f"{_SPEAKERS[turn.role]}: {quoted(turn.text)}" for turn in scrub_turns(transcript)
        )
        return USER_PROMPT.format(
            facts=facts or "(none: first call or nothing known)",
            transcript=_capped(lines, self._max_transcript_chars) or "(nobody spoke)",
            events=_transfer_event(transfer),
            tool=TOOL_NAME,
        )

    def _validated(self, answer: dict[str, Any]) -> CallAnalysis:
        answer = dict(answer)
        answer.pop("dropped_fields", None)
        # Validated apart: one bad value of the business's own is dropped, not the analysis.
        own = answer.pop("fields", None)
        own_values, dropped = self._fields.validated(own) if self._fields else ({}, {})
        try:
            analysis = CallAnalysis.model_validate(answer)
        except ValidationError as error:
            # Field locations only: the rejected values are call content and must not be logged.
            where = ", ".join(
                ".".join(str(part) for part in detail["loc"]) or "answer"
                for detail in error.errors(include_input=False, include_url=False)
            )
            raise InvalidAnalysisError(
                f"the analysis answer failed validation at {where}"
            ) from error
        if analysis.action not in self._actions:
            raise InvalidAnalysisError("the analysis answer chose an action not configured")
        language = _language_tag(analysis.language)
        if language is None:
            raise InvalidAnalysisError("the analysis answer has no BCP 47 language tag")
        return analysis.model_copy(
            update={
                "summary": _two_sentences(clean_text(scrub(analysis.summary))),
                "language": language,
                "caller_name": clean_text(analysis.caller_name or "", 80) or None,
                "facts": _trusted_facts(analysis.facts),
                "opening_line": _opening_line(analysis.opening_line),
                "fields": own_values,
                "dropped_fields": dropped,
            }
        )


def _transfer_event(transfer: CallTransfer | None) -> str:
    if transfer is None:
        return ""
    return (
        "\n<call_events>\nThe agent put the caller through to a person at the business "
        f"({quoted(transfer.target)}); the agent's reason: {quoted(transfer.reason)}. "
        "Say so in the summary.\n</call_events>\n"
    )


def _capped(text: str, limit: int) -> str:
    """Keep the head and the tail of an oversized transcript, with a marked gap between."""
    if len(text) <= limit:
        return text
    half = limit // 2
    omitted = len(text) - 2 * half
    return f"{text[:half]}\n[... {omitted} characters of the call omitted ...]\n{text[-half:]}"


def _two_sentences(summary: str) -> str:
    # A third sentence is not worth a retry; keeping the first two is the contract.
    return " ".join(_SENTENCE_BREAK.split(summary, maxsplit=2)[:2])


def _opening_line(text: str | None) -> str | None:
    """The next call's first words, or None when they cannot be spoken to whoever picks up.

    A line that carried a secret is dropped, not scrubbed: a placeholder read aloud at pickup
    would be worse than the greeting template. So is an overlong one (it is not a greeting) and
    one that :func:`memory.privacy.admission.admit_fact` would refuse as a fact.
    """
    line = clean_text(text or "")
    if not line or len(line) > MAX_OPENING_CHARS or len(line.split()) > MAX_OPENING_WORDS:
        return None
    # The same gate as a fact: a line carrying a secret or a claim of authority is not spoken.
    return line if admit_fact(line).text == line else None


def _language_tag(tag: str) -> str | None:
    """Normalise a BCP 47 tag's case ("EN-us" → "en-US"); None when it is not one."""
    tag = tag.strip().replace("_", "-")
    if not _LANGUAGE_TAG.fullmatch(tag):
        return None
    language, *subtags = tag.split("-")
    cased = [language.lower()]
    for subtag in subtags:
        if len(subtag) == 2 and subtag.isalpha():
            cased.append(subtag.upper())
        elif len(subtag) == 4 and subtag.isalpha():
            cased.append(subtag.title())
        else:
            cased.append(subtag.lower())
    return "-".join(cased)


def _trusted_facts(facts: Sequence[ExtractedFact]) -> list[ExtractedFact]:
    """The facts ``memory.privacy.admission`` admits, in the words it admits them."""
    kept = []
    for fact in facts:
        admission = admit_fact(fact.text, kind=fact.kind)
        if admission.text is not None:
            kept.append(fact.model_copy(update={"text": admission.text}))
    return kept


def _classify(
    error: anthropic.AnthropicError,
) -> RetryableAnalysisError | InvalidAnalysisError | PermanentAnalysisError:
    """Map an SDK error to the analysis error the worker knows how to handle."""
    if isinstance(error, anthropic.APIResponseValidationError):
        return InvalidAnalysisError("the LLM response did not match the Messages API")
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        described = f"HTTP {status} ({error.type or 'no error type'})"
        # The server may say explicitly whether a retry can help; the SDK obeys it too.
        should_retry = error.response.headers.get("x-should-retry")
        if should_retry == "true" or (
            should_retry != "false" and (status in (408, 409, 429) or status >= 500)
        ):
            return RetryableAnalysisError(
                f"the LLM is unavailable: {described}",
                retry_after=_retry_after(error.response.headers),
            )
        return PermanentAnalysisError(f"the LLM refused the request: {described}")
    if isinstance(error, anthropic.APITimeoutError):
        return RetryableAnalysisError("the LLM request timed out")
    if isinstance(error, anthropic.APIConnectionError):
        return RetryableAnalysisError("the LLM could not be reached")
    if isinstance(error, anthropic.APIError):
        return RetryableAnalysisError(f"the LLM request failed: {type(error).__name__}")
    # Not a request failure at all (e.g. missing credentials): retrying cannot help.
    return PermanentAnalysisError(f"the LLM client failed: {type(error).__name__}")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
        if name == "retry-after" and (parsed := email.utils.parsedate_tz(value)) is not None:
            return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None
