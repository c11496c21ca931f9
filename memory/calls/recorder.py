"""Recording one call as it happens: each finished turn appended in order, then the call closed.

The recorder is fed synchronously from the call path (``add_turn`` and ``finish`` never wait)
and writes from its own task, which runs while there is something to write. That task belongs
to the recorder, not to the pipeline, on purpose: a call's record must outlive the pipeline that
produced it, since the end of a call (hang-up, error, idle timeout) is exactly when the pipeline
is torn down. The process drains the recorders still writing at shutdown with
:meth:`CallRecorder.drain_all`; a process that dies anyway leaves its turns stored and the call
open, and the analysis worker's sweeper finishes it. A platform answers a request only once
its turns are stored (:meth:`CallRecorder.wait_closed`), so a process dying between two
requests loses none.

The writing task survives anything: an error it does not expect is logged (its type only) and
the turns it holds are kept for the next write. A caller forgotten during the call is not
recorded further: the forget refuses the call's writes, and the recorder drops what it holds.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, TypeVar

from loguru import logger

from memory.calls.closing import end_call
from memory.errors import ForgottenCallerError, MemoryUnavailableError
from memory.models import CallRecord, CallTransfer, CallTrust, Turn, clean_text, now
from memory.privacy.identity import CallerIdentity
from memory.privacy.scrub import scrub
from memory.report import CallReport
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue

#: Attempts per write before turns are held back for the next one, and the pause between them.
WRITE_ATTEMPTS = 3
RETRY_PAUSE_S = 0.2
#: How long a finished turn waits before it is written: the turn that produced it finishes
#: first (the event loop is the call's), and a caller turn and its answer go in one round trip.
WRITE_DELAY_S = 0.05

_T = TypeVar("_T")
#: Characters kept beyond the stored length before scrubbing, so a secret straddling the
#: stored length is still recognised whole.
_CUT_MARGIN = 64
_TRAILING_NUMBER = re.compile(r"[\d\s().\-/+]+$")


@dataclass(frozen=True, slots=True)
class _Said:
    role: Literal["user", "assistant"]
    text: str
    at: float


@dataclass(frozen=True, slots=True)
class _Finish:
    reason: str
    at: float
    language: str | None


class CallRecorder:
    """Stores one call's turns as they happen and closes the call exactly once.

    Args:
        store: Where turns and the call record go.
        queue: Where the ended call is queued for analysis.
        caller: The caller (anonymous callers get no recorder: they are never recorded).
        call_id: The call's id (the transport's call id, or a fresh one).
        trust: How far the caller id was believed; kept on the call record.
        report: Builds the call's report when the call closes (None: no report).
        started_at: When the call began (default: now); a platform call taken up by another
            process keeps the start its first process noted.
        sealed_number: The caller's number sealed for calling back
            (:meth:`memory.runtime.MemoryRuntime.sealed_number`), kept with the call's first
            write; None keeps none.
    """

    _unfinished: ClassVar[set[CallRecorder]] = set()

    def __init__(
        self,
        *,
        store: MemoryStore,
        queue: AnalysisQueue,
        caller: CallerIdentity,
        call_id: str,
        trust: CallTrust | None = None,
        report: Callable[[], CallReport] | None = None,
        started_at: float | None = None,
        sealed_number: bytes | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._caller = caller
        self._call_id = call_id
        self._trust = trust
        self._report = report
        self._sealed_number = sealed_number
        self._started_at = now() if started_at is None else started_at
        self._pending: asyncio.Queue[_Said | _Finish] = asyncio.Queue()
        self._held_back: list[Turn] = []
        self._finished = False
        self._transfer: CallTransfer | None = None
        self._forgotten = False
        self._task: asyncio.Task[None] | None = None

    @property
    def call_id(self) -> str:
        """The id the call is stored under."""
        return self._call_id

    def add_turn(self, role: Literal["user", "assistant"], text: str) -> None:
        """Queue one finished turn for storage; never waits (scrubbing happens off the path)."""
        if not self._finished:
            self._put(_Said(role=role, text=text, at=now()))

    def note_transfer(self, transfer: CallTransfer) -> None:
        """Keep on the call's record that the caller was put through to a person."""
        self._transfer = transfer

    def finish(self, reason: str, *, language: str | None = None) -> None:
        """Close the call after its queued turns are stored; only the first call counts.

        Args:
            reason: How the call ended.
            language: The language the call ended in, when known.
        """
        if self._finished:
            return
        self._finished = True
        self._put(_Finish(reason=reason, at=now(), language=language))

    async def wait_closed(self) -> None:
        """Wait until what was queued is stored: the turns so far, and the close once finished.

        Bound it with ``asyncio.timeout``. Turns whose writes failed are held back for the next
        write; this returns all the same.
        """
        if self._task is not None:
            await asyncio.shield(self._task)

    @classmethod
    async def drain_all(cls) -> None:
        """Wait for every unfinished recorder of this process, at shutdown.

        Bound it with ``asyncio.timeout``; leaving early only cancels the wait, not the writes.
        """
        tasks = [r._task for r in cls._unfinished if r._task is not None]
        if tasks:
            await asyncio.wait(tasks)

    def _put(self, item: _Said | _Finish) -> None:
        self._pending.put_nowait(item)
        if self._task is None or self._task.done():
            self._unfinished.add(self)
            self._task = asyncio.get_running_loop().create_task(self._write_all())

    async def _write_all(self) -> None:
        try:
            while True:
                items = [await self._pending.get()]
                await asyncio.sleep(WRITE_DELAY_S)
                while not self._pending.empty():
                    items.append(self._pending.get_nowait())
                if self._sealed_number is not None:
                    # With the call's first write, under the same forget check as its turns.
                    await self._attempt(self._keep_number, self._sealed_number)
                    self._sealed_number = None
                for item in items:
                    if isinstance(item, _Said) and (turn := self._turn(item)):
                        self._held_back.append(turn)
                if self._held_back and await self._attempt(self._store_turns, self._held_back):
                    self._held_back = []
                finish = next((item for item in items if isinstance(item, _Finish)), None)
                if finish is not None:
                    await self._close(finish)
                    return
                if self._pending.empty():
                    # Idle until the next turn: a recorder of a call that another process will
                    # close (a platform call) holds nothing open, not even the shutdown drain.
                    return
        finally:
            self._unfinished.discard(self)

    def _turn(self, said: _Said) -> Turn | None:
        try:
            # Cut before scrubbing (a megabyte turn must not hold the event loop), with room
            # for a number or card that straddles the cut to still be recognised.
            limit = self._store.max_text_chars
            text = said.text
            if len(text) > limit + _CUT_MARGIN:
                # A number cut in half would not be recognised: drop the digits at the cut.
                text = _TRAILING_NUMBER.sub("", text[: limit + _CUT_MARGIN])
            text = clean_text(scrub(text), limit)
            if not text:
                return None
            return Turn(role=said.role, text=text, at=said.at, call_id=self._call_id)
        except Exception as error:
            logger.warning(
                "Skipped a turn of {} that could not be prepared ({})",
                self._caller.masked,
                type(error).__name__,
            )
            return None

    async def _store_turns(self, turns: list[Turn]) -> None:
        await self._store.append_turns(self._caller, turns, call_started_at=self._started_at)

    async def _keep_number(self, sealed: bytes) -> None:
        await self._store.keep_number(self._caller, sealed, call_started_at=self._started_at)

    async def _close(self, finish: _Finish) -> None:
        record = CallRecord(
            call_id=self._call_id,
            agent_id=self._caller.agent_id,
            started_at=self._started_at,
            ended_at=finish.at,
            ended_reason=finish.reason,
            language=finish.language,
            masked_number=self._caller.masked,
            trust=self._trust,
            transfer=self._transfer,
            report=self._built_report(),
        )
        if self._forgotten:
            return
        if self._held_back or not await self._attempt(self._end_call, record):
            # Unstored turns are not analysed from a partial transcript: the call stays open
            # and the worker's sweeper closes it once what was stored has sat idle.
            logger.warning(
                "Call {} of {} could not be closed; {} turns were not stored",
                self._call_id,
                self._caller.masked,
                len(self._held_back),
            )

    def _built_report(self) -> CallReport | None:
        if self._report is None:
            return None
        try:
            return self._report()
        except Exception as e:  # a report must never keep a call from being closed
            logger.warning("The report of call {} failed: {}", self._call_id, type(e).__name__)
            return None

    async def _end_call(self, record: CallRecord) -> None:
        await end_call(self._store, self._queue, self._caller, record)

    async def _attempt(self, write: Callable[[_T], Awaitable[None]], item: _T) -> bool:
        if self._forgotten:
            self._held_back = []
            return True
        for attempt in range(WRITE_ATTEMPTS):
            try:
                await write(item)
                return True
            except ForgottenCallerError:
                logger.info("The caller {} was forgotten during the call", self._caller.masked)
                self._forgotten = True
                self._held_back = []
                return True
            except MemoryUnavailableError as error:
                reason = type(error).__name__
            except Exception as error:
                # Never silently: the task must live on and keep the turns it holds.
                reason = type(error).__name__
                logger.error("Recording a call of {} failed ({})", self._caller.masked, reason)
            if attempt + 1 < WRITE_ATTEMPTS:
                await asyncio.sleep(RETRY_PAUSE_S * (attempt + 1))
        logger.warning(
            "Memory unavailable while recording a call of {} ({})", self._caller.masked, reason
        )
        return False
