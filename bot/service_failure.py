"""A call whose STT, LLM or TTS fails is handed on at once, never left in silence.

Pipecat reports a failing service as an ``ErrorFrame``, which the pipeline worker hands to its
``on_pipeline_error`` handlers: Deepgram's STT refused at the handshake (HTTP 401; the service
is then unusable), or its connection lost during the call (it reconnects only after a back-off
of 4 s or more, and gives up after three quick failures); Azure's TTS cancelling a synthesis (a
refused key, a lost connection); the LLM's request failing after the SDK's own retries (a
refused key, an outage). Either way the caller cannot be heard, or answered, or cannot hear the
agent, for seconds at least. Waiting for Pipecat to give up would leave them in silence, so the
first such error hands the call on, without the agent (:meth:`bot.transfer.LineHandoff.hand_on`):

- with a transfer target (``RAPPORT_TRANSFER_TO``) and the business open: on Twilio, the live
  call is updated with TwiML ``<Say>`` (an apology in the caller's language, in Twilio's own
  voice) and ``<Dial>``; on Daily, the dial-in's SIP call is transferred;
- without one: on Twilio, ``<Say>`` the apology and that the business will call back, then
  ``<Hangup/>``; on Daily (no voice of its own), the call ends.

The call then ends recorded as ``failed: <service> unavailable`` with whatever was said, which
puts it at the top of the follow-up list (:func:`memory.store.followup_index.urgency_band`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from loguru import logger
from pipecat.frames.frames import ErrorFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.utils.errors import ErrorCategory

from bot.call_report import service_kind
from bot.hours import BusinessHours
from bot.transfer import LineHandoff
from memory.calls.recorder import CallRecorder
from memory.language import voice_locale
from memory.models import service_failed

#: The services whose failure leaves the caller unheard or unanswered.
CALL_SERVICES = ("stt", "llm", "tts")


class ServiceFailureHandoff:
    """Hands a call on when its STT, LLM or TTS fails; attach it to the call's worker.

    Args:
        handoff: How the call's transport hands a caller on; None: it cannot (the call ends).
        target: Where callers are put through (``RAPPORT_TRANSFER_TO``); None: nobody.
        hours: The business's hours (closed: nobody to put through); None: always open.
        language: The call's current language (a primary subtag).
        voices: The agent's voice per language (their locales tell Twilio's voice the language).
        putting_through: What Twilio says before putting the caller through, per language
            (each of these three must include "en").
        call_back: ... before hanging up on a recorded caller (the business calls back).
        try_later: ... before hanging up on an unrecorded caller; ``{business}`` is filled in.
        business_name: Who the apology speaks for.
        recorder: The call's recorder (closed as ``failed: <service> unavailable``); None when
            the call is not recorded (the business cannot call the caller back).
        masked_caller: The caller, masked, for the log line.
        clock: The current time (tests give their own).
    """

    def __init__(
        self,
        *,
        handoff: LineHandoff | None,
        target: str | None,
        hours: BusinessHours | None,
        language: Callable[[], str],
        voices: Mapping[str, str],
        putting_through: Mapping[str, str],
        call_back: Mapping[str, str],
        try_later: Mapping[str, str],
        business_name: str,
        recorder: CallRecorder | None,
        masked_caller: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._handoff = handoff
        self._target = target
        self._hours = hours
        self._language = language
        self._voices = voices
        self._putting_through = putting_through
        self._call_back = call_back
        self._try_later = try_later
        self._business = business_name
        self._recorder = recorder
        self._who = masked_caller
        self._clock = clock
        self._handing_on = False

    def attach(self, worker: PipelineWorker) -> None:
        """Watch the call's errors."""

        @worker.event_handler("on_pipeline_error")
        async def _on_error(failing: PipelineWorker, frame: ErrorFrame) -> None:
            await self.on_error(failing, frame)

    async def on_error(self, worker: PipelineWorker, frame: ErrorFrame) -> None:
        """Hand the call on at the first error of its STT, LLM or TTS, then end it as failed."""
        service = service_kind(frame.processor)
        if service not in CALL_SERVICES or frame.category is ErrorCategory.APPLICATION:
            return
        if self._handing_on:
            return
        self._handing_on = True
        assert service is not None
        target = self._open_target()
        if target:
            lines = self._putting_through
        else:
            lines = self._call_back if self._recorder is not None else self._try_later
        handed_on = False
        if self._handoff is not None:
            language = self._language()
            say = lines.get(language, lines["en"]).format(business=self._business)
            voice = self._voices.get(language) or next(iter(self._voices.values()))
            handed_on = await self._handoff.hand_on(
                say=say, locale=voice_locale(voice), target=target
            )
        logger.warning(
            "The {} of the call of {} failed; {}",
            service,
            self._who,
            "handed on" if handed_on else "ending the call",
        )
        reason = service_failed(service)
        if self._recorder is not None:
            # Closed here, not by the CancelFrame: a service refused while the pipeline is set
            # up fails before the call starts, and a cancel then reaches no processor.
            self._recorder.finish(reason, language=self._language())
        await worker.cancel(reason=reason)

    def _open_target(self) -> str | None:
        if self._target is None:
            return None
        if self._hours is not None and not self._hours.is_open(self._clock()):
            return None
        return self._target
