"""The analysis worker: turns ended calls on the analysis queue into caller memory.

For each job the worker loads the call and the caller's facts, scrubs the stored transcript
(before anything else, so even a call whose analysis fails keeps no secret), asks the LLM for
the analysis (``CallAnalyzer``), merges the extracted facts into the known ones
(``merge_facts``), writes record, profile and facts in one atomic, idempotent step
(``MemoryStore.record_call``), embeds the facts that are new and only then acknowledges the
job. Embedding comes after the write because the model is the slowest step: the next call can
load the new memories meanwhile.

Failures:

- The LLM could not answer (timeout, 429, 5xx, 529 overloaded): retried with exponential
  backoff, honouring ``retry-after`` (capped), up to ``max_retries`` times.
- The LLM answered with an invalid analysis: retried ``max_invalid_retries`` times.
- Then, or at once for a refused request (bad key, bad request), the job goes to the
  dead-letter stream with the reason, and the call record is marked failed with it; the record
  and its transcript stay. ``AnalysisQueue.retry_dead`` queues them again.
- Redis down: the job is left unacknowledged and claimed again once Redis is back.
- A worker that dies mid-job stops renewing its claim; another worker claims the job after
  ``claim_timeout``. A job delivered ``max_deliveries`` times is dead-lettered.

A sweeper (one worker at a time, every ``sweep_interval``) closes and queues calls whose bot
died mid-call (turns stored, no end, silent for ``idle_timeout``) and finishes hang-ups whose
process died between closing the call and queueing it.

With a call history (:mod:`memory.history`), each call is written to it when a worker takes
its job (the closed call, transcript scrubbed) and again, before the job is acknowledged, once
analysed or dead-lettered: the job is acknowledged only when both Redis and the history have the
call. A history that does not answer is retried with backoff while the worker keeps its claim on
the job, so calls wait in the queue and arrive once the database is back; the call path never
waits for it. The sweeper also drops history past ``RAPPORT_HISTORY_RETENTION_DAYS``.

Every worker also runs the erasure scheduler (:mod:`memory.privacy.erasure`): once a forget's
deadline has passed, one of them has Redis rewrite its append-only file, so erased data leaves
the disk.

Every worker also keeps call-start digests current (:mod:`memory.store.digest`): after each
analysis it rebuilds the caller's at once, and every ``DIGEST_EVERY_S`` it rebuilds those other
writes asked for (``remember``, the dashboard, a call start that found none current).

Several workers, in one process (``concurrency``) or many, share the queue safely.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from enum import StrEnum
from typing import Any

from loguru import logger

from memory.analysis.analyzer import CallAnalyzer, analysis_client
from memory.analysis.merge import FactMerge, merge_facts
from memory.analysis.settings import AnalysisSettings
from memory.analysis.webhook import AnalysisWebhook
from memory.backoff import backoff_delay
from memory.calls.closing import end_call
from memory.errors import (
    AnalysisError,
    ForgottenCallerError,
    HistoryRefusedError,
    HistoryUnavailableError,
    InvalidAnalysisError,
    MemoryUnavailableError,
    PermanentAnalysisError,
    RetryableAnalysisError,
)
from memory.metrics import ANALYSIS_DURATION
from memory.models import CallAnalysis, CallRecord, CallStatus, CallTransfer, Fact, Turn, now
from memory.privacy.identity import CallerIdentity
from memory.privacy.scrub import scrub_turns
from memory.recall.call_start import rebuild_digest
from memory.recall.embeddings import Embedder, default_embedder, with_embeddings
from memory.report import AnalysisUsage, CallReport, PriceTable, load_prices
from memory.store.callers import MemoryStore, StaleMemoryError
from memory.store.queue import AnalysisJob, AnalysisQueue
from memory.upstream import UPSTREAM, Service, failure_kind

#: Why a call closed by the sweeper ended: its bot stopped sending turns.
ABANDONED = "abandoned"
#: Consumers gone this long with no job are removed from the group by the sweeper.
_CONSUMER_RETENTION = 24 * 3600.0
#: Pause after Redis failed to answer before the worker tries again.
_REDIS_PAUSE = 1.0
#: Merges of one analysis against facts that changed meanwhile before the job is retried later.
_MERGE_ATTEMPTS = 5
#: How often a running worker renews its heartbeat (``GET /health`` reads it).
HEARTBEAT_EVERY_S = 5.0
#: How often a worker rebuilds the call-start digests that writes asked for.
DIGEST_EVERY_S = 1.0
#: How often one worker deletes the history past its retention.
_HISTORY_EXPIRY_EVERY_S = 3600.0


class JobOutcome(StrEnum):
    """What handling one job did."""

    ANALYSED = "analysed"
    #: The call was analysed already (a replayed job): nothing changed.
    REPLAYED = "replayed"
    #: The call is no longer stored (forgotten or expired): nothing to do.
    MISSING = "missing"
    #: The analysis failed for good: the job is in the dead-letter stream.
    DEAD = "dead"


def single_threaded_embeddings() -> None:
    """Run the embedding model on one core (``OMP_NUM_THREADS=1``) unless told otherwise.

    Call before the model loads. On all cores, each embedding starves the worker's event loop
    and every other worker on the machine; one core each keeps hang-up to loadable memories
    fast, and more workers (or ``concurrency``) use more cores.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def consumer_name() -> str:
    """A consumer name unique to this worker: host, process id and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class AnalysisWorker:
    """Consumes the analysis queue: one or more jobs at a time, until told to stop.

    Args:
        store: The memory store the calls and facts live in.
        queue: The analysis queue (its client must allow blocking reads of about a second).
        analyzer: The LLM analysis.
        settings: Retries, timeouts, concurrency and the business name.
        embedder: Embeds new facts as they are written; None stores them without embeddings.
        webhook: Where each analysis is also sent, if anywhere.
        consumer: This worker's consumer name (default: ``consumer_name()``).
        prices: Prices the analysis request is added to each call's cost with (default: the
            shipped list prices).
    """

    def __init__(
        self,
        *,
        store: MemoryStore,
        queue: AnalysisQueue,
        analyzer: CallAnalyzer,
        settings: AnalysisSettings,
        embedder: Embedder | None = None,
        webhook: AnalysisWebhook | None = None,
        consumer: str | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._analyzer = analyzer
        self._settings = settings
        self._embedder = embedder
        self._webhook = webhook
        self.consumer = consumer or consumer_name()
        self._prices = prices or load_prices()
        self._next_claim = 0.0
        self._next_history_expiry = 0.0

    # -- running -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Work until ``stop`` is set (or the task is cancelled).

        On ``stop`` no new job is taken; jobs in progress get ``stop_grace`` seconds to finish
        and are then abandoned unacknowledged, for another worker to claim.
        """
        stop = stop or asyncio.Event()
        tasks = [
            asyncio.create_task(self._work(stop), name=f"analysis-worker-{slot}")
            for slot in range(self._settings.concurrency)
        ]
        tasks.append(asyncio.create_task(self._sweep_periodically(stop), name="analysis-sweeper"))
        tasks.append(asyncio.create_task(self._beat_periodically(stop), name="analysis-heartbeat"))
        tasks.append(asyncio.create_task(self._digests_periodically(stop), name="call-digests"))
        erasure = self._store.erasure_scheduler()
        tasks.append(asyncio.create_task(erasure.run(stop), name="erasure-scheduler"))
        logger.info("Analysis worker started ({} at a time)", self._settings.concurrency)
        try:
            await stop.wait()
            await asyncio.wait(tasks, timeout=self._settings.stop_grace)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            logger.info("Analysis worker stopped")

    async def _work(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                job = await self.next_job(stop)
                if job is not None:
                    await self.process(job)
            except MemoryUnavailableError:
                # The outage itself is logged once, by memory.backend.outage.
                logger.debug("Redis did not answer the analysis worker; retrying shortly")
                await _sleep_unless(stop, _REDIS_PAUSE)
            except Exception as error:
                # A bug, not a call: the job stays unacknowledged and is delivered again, up to
                # max_deliveries. The type only: a message may quote call content.
                logger.error("Analysis job failed unexpectedly: {}", type(error).__name__)
                await _sleep_unless(stop, _REDIS_PAUSE)

    async def next_job(self, stop: asyncio.Event | None = None) -> AnalysisJob | None:
        """The next job: a stale one of a dead worker first, else a new one (waits ~1 s).

        Returns:
            A job, or None when none came (or ``stop`` was set while waiting).
        """
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_claim:
            claimed = await self._queue.claim_stale(
                self.consumer, min_idle=self._settings.claim_timeout
            )
            if claimed:
                return claimed[0]
            self._next_claim = loop.time() + self._settings.claim_timeout / 4
        read = asyncio.ensure_future(self._queue.read(self.consumer, block=1.0))
        if stop is None:
            jobs = await read
        else:
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait((read, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not read.done():
                # A job read at this moment stays pending for this consumer, claimed later.
                read.cancel()
                with suppress(asyncio.CancelledError):
                    await read
                return None
            jobs = read.result()
        return jobs[0] if jobs else None

    # -- one job -----------------------------------------------------------------------------

    async def process(self, job: AnalysisJob) -> JobOutcome:
        """Handle one job end to end, renewing the claim on it meanwhile.

        Raises:
            MemoryUnavailableError: Redis did not answer; the job stays unacknowledged.
        """
        heartbeat = asyncio.create_task(self._renew_claim(job), name="analysis-claim")
        started = time.perf_counter()
        outcome = "error"
        try:
            outcome = await self._process(job)
            return outcome
        finally:
            heartbeat.cancel()
            ANALYSIS_DURATION.labels(outcome=outcome).observe(time.perf_counter() - started)

    async def _renew_claim(self, job: AnalysisJob) -> None:
        while True:
            await asyncio.sleep(self._settings.claim_timeout / 3)
            with suppress(MemoryUnavailableError):
                if not await self._queue.renew(self.consumer, job):
                    return  # claimed by another worker; results are idempotent either way

    async def _process(self, job: AnalysisJob) -> JobOutcome:
        caller = job.caller
        record = await self._store.get_call(caller, job.call_id)
        if record is None:
            await self._queue.ack(job)
            return JobOutcome.MISSING
        exhausted = job.deliveries > self._settings.max_deliveries
        if record.status == CallStatus.ANALYSED:
            # A worker may have died between writing the facts and embedding them, or waited
            # for the history until it stopped. Past max_deliveries the embedding may be what
            # kills workers: the analysis is written, so only the history is still owed.
            if not exhausted:
                audited = {*record.facts_written, *record.facts_confirmed}
                facts = await self._store.all_facts(caller) if audited else []
                await self._embed(caller, [fact for fact in facts if fact.id in audited])
            await self._keep_in_history(caller, record)
            await self._queue.ack(job)
            return JobOutcome.REPLAYED
        if exhausted:
            reason = f"delivered {job.deliveries} times and never finished (workers died)"
            return await self._give_up(job, reason)
        transcript = await self._scrubbed_transcript(job, record.transcript)
        await self._note_closed(caller, record.model_copy(update={"transcript": transcript}))
        try:
            facts = await self._store.all_facts(caller)
            analysis, usage = await self._analyse(transcript, facts, transfer=record.transfer)
        except AnalysisError as error:
            return await self._give_up(job, str(error))
        report = record.report and record.report.with_analysis(usage, self._prices)
        # Read again: another call of this caller may have been analysed while the LLM worked,
        # and write only if nothing changed since (else merge again): a superseded fact is
        # never written back next to its replacement.
        for attempt in range(_MERGE_ATTEMPTS):
            known, version = await self._store.facts_with_version(caller)
            merge = merge_facts(
                known, analysis.facts, call_id=job.call_id, at=record.ended_at or now()
            )
            analysed = _analysed(record, analysis, transcript, known, merge, caller, report)
            try:
                written = await self._store.record_call(
                    caller, analysed, facts=merge.upserts, facts_version=version
                )
                break
            except StaleMemoryError:
                if attempt + 1 == _MERGE_ATTEMPTS:
                    raise
            except ForgottenCallerError:
                # Forgotten while the LLM worked: nothing of this call may be written back.
                await self._queue.ack(job)
                return JobOutcome.MISSING
        if written:
            await self._embed(caller, merge.upserts)
            await self.refresh_digest(caller)
        await self._keep_in_history(
            caller, analysed.model_copy(update={"status": CallStatus.ANALYSED})
        )
        await self._queue.ack(job)
        if not written:
            return JobOutcome.REPLAYED
        logger.info("Analysed a call of {} for {}", caller.masked, caller.agent_id)
        if self._webhook is not None:
            self._webhook.submit(_webhook_payload(analysed, analysis, merge, known))
        return JobOutcome.ANALYSED

    async def embed_requested(self, *, count: int = 100) -> int:
        """Embed the facts of callers that asked for it (facts stored without a vector).

        Returns:
            How many callers were looked at.
        """
        if self._embedder is None:
            return 0
        callers = await self._store.embedding_requests(count=count)
        for caller in callers:
            await self._embed(caller, await self._store.all_facts(caller))
        return len(callers)

    async def refresh_digest(self, caller: CallerIdentity) -> bool:
        """Rebuild one caller's call-start digest if it is out of date (see :mod:`.call_start`).

        A failure only leaves the digest stale (call starts take the bounded path meanwhile).

        Returns:
            True when a new digest was stored.
        """
        try:
            return await rebuild_digest(self._store, caller, self._embedder)
        except MemoryUnavailableError:
            raise
        except Exception as error:
            # The type only: a message may quote caller memory.
            logger.warning("Rebuilding a call-start digest failed ({})", type(error).__name__)
            return False

    async def rebuild_requested_digests(self, *, count: int = 100) -> int:
        """Rebuild the digests writes asked for since the last time.

        Returns:
            How many callers were looked at.
        """
        callers = await self._store.digest_requests(count=count)
        for caller in callers:
            await self.refresh_digest(caller)
        return len(callers)

    async def _digests_periodically(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with suppress(MemoryUnavailableError):
                while await self.rebuild_requested_digests():
                    pass
            await _sleep_unless(stop, DIGEST_EVERY_S)

    async def _scrubbed_transcript(self, job: AnalysisJob, turns: Sequence[Turn]) -> list[Turn]:
        """Scrub the stored transcript in place; the scrubbed turns are all that is used after."""
        scrubbed = scrub_turns(turns)
        if any(old.text != new.text for old, new in zip(turns, scrubbed, strict=True)):
            await self._store.replace_transcript(job.caller, job.call_id, scrubbed)
        return scrubbed

    async def _analyse(
        self,
        transcript: Sequence[Turn],
        facts: Sequence[Fact],
        *,
        transfer: CallTransfer | None = None,
    ) -> tuple[CallAnalysis, AnalysisUsage]:
        """The analysis and its request's tokens, retried as the module docstring says."""
        settings = self._settings
        unavailable = invalid = 0
        while True:
            try:
                return await self._requested(transcript, facts, transfer=transfer)
            except RetryableAnalysisError as error:
                unavailable += 1
                if unavailable > settings.max_retries:
                    raise RetryableAnalysisError(
                        f"{error} (gave up after {unavailable} attempts)"
                    ) from error
                delay = backoff_delay(
                    unavailable,
                    base=settings.backoff_base,
                    cap=settings.backoff_max,
                    floor=error.retry_after,
                )
            except InvalidAnalysisError as error:
                invalid += 1
                if invalid > settings.max_invalid_retries:
                    raise InvalidAnalysisError(
                        f"{error} (gave up after {invalid} invalid answers)"
                    ) from error
                delay = backoff_delay(invalid, base=settings.backoff_base, cap=settings.backoff_max)
            await asyncio.sleep(delay)

    async def _requested(
        self, transcript: Sequence[Turn], facts: Sequence[Fact], *, transfer: CallTransfer | None
    ) -> tuple[CallAnalysis, AnalysisUsage]:
        """One analysis request, its failure or success told to :data:`UPSTREAM`."""
        try:
            analysed = await self._analyzer.analyse_with_usage(
                transcript=transcript,
                existing_facts=facts,
                business=self._settings.business_name,
                transfer=transfer,
            )
        except (RetryableAnalysisError, PermanentAnalysisError) as error:
            UPSTREAM.failed(Service.ANALYSIS_LLM, failure_kind(error))
            raise
        except InvalidAnalysisError:
            UPSTREAM.succeeded(Service.ANALYSIS_LLM)  # it answered (badly): the key is good
            raise
        UPSTREAM.succeeded(Service.ANALYSIS_LLM)
        return analysed

    async def _embed(self, caller: CallerIdentity, facts: Sequence[Fact]) -> None:
        """Store embeddings for the facts that lack a current one.

        Runs after the facts are written, so the next call can load them without waiting for
        the model; a failure leaves them without (they are loaded all the same, and ranked
        without similarity until a later call confirms them).
        """
        if self._embedder is None or not facts:
            return
        try:
            embedded = await asyncio.to_thread(with_embeddings, facts, self._embedder)
        except Exception as error:
            # The type only: a message may quote the fact.
            logger.warning("Embedding new facts failed ({}); stored without", type(error).__name__)
            return
        fresh = {
            new.id: new.embedding
            for old, new in zip(facts, embedded, strict=True)
            if new is not old and new.embedding is not None
        }
        await self._store.set_embeddings(caller, fresh)

    async def _give_up(self, job: AnalysisJob, reason: str) -> JobOutcome:
        await self._store.mark_failed(job.caller, job.call_id, reason)
        failed = await self._store.get_call(job.caller, job.call_id)
        if failed is not None and failed.status == CallStatus.FAILED:
            await self._keep_in_history(job.caller, failed)
        await self._queue.dead_letter(job, reason)
        # The reason is Rapport's own wording (an HTTP status, an error type), never call text.
        logger.warning(
            "Analysis of a call of {} for {} failed for good; dead-lettered: {}",
            job.caller.masked,
            job.caller.agent_id,
            reason,
        )
        return JobOutcome.DEAD

    # -- the call history --------------------------------------------------------------------

    async def _note_closed(self, caller: CallerIdentity, record: CallRecord) -> None:
        """Write the closed call to the history now, if it answers (the final write waits)."""
        history = self._store.history
        if history is None:
            return
        with suppress(HistoryUnavailableError, HistoryRefusedError):
            await history.save(caller, record)

    async def _keep_in_history(self, caller: CallerIdentity, record: CallRecord) -> None:
        """Write the call to the history, retrying with backoff until the database answers.

        The job stays claimed (and unacknowledged) meanwhile: a worker stopped while it waits
        leaves the job for another, which writes it once the database is back. A refused write
        (the caller was forgotten, or the history holds the call further along) is done too.
        """
        history = self._store.history
        if history is None:
            return
        # The history keeps only redacted text, whichever path the record took here.
        redacted = record.model_copy(update={"transcript": scrub_turns(record.transcript)})
        attempt = 0
        while True:
            try:
                await history.save(caller, redacted)
                return
            except HistoryRefusedError as error:
                # A bug, not an outage: holding the job would stop every call behind it.
                logger.error(
                    "The call history refused a call of {}; it stays in Redis only ({})",
                    caller.masked,
                    type(error.__cause__).__name__,
                )
                return
            except HistoryUnavailableError:
                attempt += 1
                if attempt == 1:
                    logger.warning(
                        "The call history did not answer: a call of {} waits in the queue "
                        "until it does",
                        caller.masked,
                    )
            settings = self._settings
            await asyncio.sleep(
                backoff_delay(attempt, base=settings.backoff_base, cap=settings.backoff_max)
            )

    async def _expire_history(self) -> None:
        """Delete the history past its retention, at most once per ``_HISTORY_EXPIRY_EVERY_S``."""
        history = self._store.history
        loop = asyncio.get_running_loop()
        if history is None or loop.time() < self._next_history_expiry:
            return
        try:
            expired = await history.expire()
        except HistoryUnavailableError:
            return  # tried again at the next sweep
        self._next_history_expiry = loop.time() + _HISTORY_EXPIRY_EVERY_S
        if expired:
            logger.info("Deleted {} calls past the history's retention", expired)

    # -- sweeping ----------------------------------------------------------------------------

    async def _sweep_periodically(self, stop: asyncio.Event) -> None:
        every = self._settings.sweep_interval
        while not stop.is_set():
            try:
                if await self._queue.lead_sweep(self.consumer, every=every):
                    await self.sweep()
            except MemoryUnavailableError:
                logger.debug("Redis did not answer the analysis sweeper; retrying later")
            await _sleep_unless(stop, every)

    async def _beat_periodically(self, stop: asyncio.Event) -> None:
        """Tell ``GET /health`` this worker is alive, every ``HEARTBEAT_EVERY_S``."""
        while not stop.is_set():
            with suppress(MemoryUnavailableError):
                await self._queue.beat()
            await _sleep_unless(stop, HEARTBEAT_EVERY_S)

    async def sweep(self) -> int:
        """Queue the calls nobody will queue: abandoned calls and stranded hang-ups.

        Safe to run in several workers at once: closing a call is idempotent, so only its first
        closer queues it, and a call is never queued twice.

        Returns:
            How many calls were queued.
        """
        settings = self._settings
        queued = 0
        for ref in await self._queue.stranded(older_than=settings.claim_timeout):
            caller = await self._store.caller_of(ref)
            record = await self._store.get_call(caller, ref.call_id)
            if record is None or record.status in (CallStatus.ANALYSED, CallStatus.FAILED):
                await self._queue.drop_closing(ref)
            elif record.status == CallStatus.OPEN:
                queued += await end_call(self._store, self._queue, caller, _abandoned(record))
            else:
                queued += await self._queue.enqueue(caller, ref.call_id)
        for agent_id in await self._store.agents_with_open_calls():
            for ref in await self._store.open_calls(agent_id, idle_for=settings.idle_timeout):
                caller = await self._store.caller_of(ref)
                record = await self._store.get_call(caller, ref.call_id)
                if record is not None and record.status == CallStatus.OPEN:
                    queued += await end_call(self._store, self._queue, caller, _abandoned(record))
        await self._queue.prune_consumers(idle_for=_CONSUMER_RETENTION)
        await self._queue.expire_dead()
        await self._expire_history()
        await self.embed_requested()
        if queued:
            logger.info("Analysis sweeper queued {} abandoned or stranded calls", queued)
        return queued


def _analysed(
    record: CallRecord,
    analysis: CallAnalysis,
    transcript: list[Turn],
    known: Sequence[Fact],
    merge: FactMerge,
    caller: CallerIdentity,
    report: CallReport | None,
) -> CallRecord:
    """The analysed record of a call, with the audit of the memories it wrote and its report."""
    call_id = record.call_id
    return record.model_copy(
        update={
            "analysis": analysis,
            "transcript": transcript,
            # The remember tool stores facts during the call: they were written by it too.
            "facts_written": list(
                dict.fromkeys(
                    [*(f.id for f in known if f.source_call_id == call_id), *merge.written]
                )
            ),
            "facts_confirmed": merge.confirmed,
            "facts_superseded": merge.superseded,
            "error": None,
            "masked_number": caller.masked,
            "report": report,
        }
    )


def _abandoned(record: CallRecord) -> CallRecord:
    """An open call closed by the sweeper: it ended with its last turn."""
    last = record.transcript[-1].at if record.transcript else record.started_at
    return record.model_copy(update={"ended_at": last, "ended_reason": ABANDONED})


def _webhook_payload(
    record: CallRecord, analysis: CallAnalysis, merge: FactMerge, known: Sequence[Fact]
) -> dict[str, Any]:
    """The webhook body: who, which call, the analysis and the memories it changed."""
    facts = {fact.id: fact for fact in known} | {fact.id: fact for fact in merge.upserts}

    def described(ids: Sequence[str]) -> list[dict[str, Any]]:
        return [
            {"id": fact_id, "text": facts[fact_id].text, "confidence": facts[fact_id].confidence}
            for fact_id in ids
        ]

    return {
        "event": "call.analysed",
        "agent_id": record.agent_id,
        "call_id": record.call_id,
        "caller": record.masked_number,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "ended_reason": record.ended_reason,
        "analysis": analysis.model_dump(mode="json"),
        "report": record.report.model_dump(mode="json") if record.report else None,
        "memories": {
            "written": described(merge.written),
            "confirmed": described(merge.confirmed),
            "superseded": described(merge.superseded),
        },
    }


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


@asynccontextmanager
async def analysis_worker(
    store: MemoryStore,
    queue: AnalysisQueue,
    settings: AnalysisSettings | None = None,
    *,
    embedder: Embedder | None = None,
    prices: PriceTable | None = None,
) -> AsyncIterator[AnalysisWorker]:
    """Build a worker from settings (LLM client, analyzer, webhook) and close them after.

    Facts are embedded with ``embedder``, by default the process-wide ``default_embedder()``.

    Raises:
        ConfigurationError: ``ANTHROPIC_API_KEY`` is missing, the webhook has no secret, or
            the fields file (``RAPPORT_ANALYSIS_FIELDS``) is bad.
    """
    settings = settings or AnalysisSettings()
    api_key = settings.require_api_key()
    secret = settings.webhook_signing_secret()
    fields = settings.analysis_fields()
    client = analysis_client(
        api_key=api_key, base_url=settings.base_url, timeout=settings.request_timeout
    )
    webhook = (
        AnalysisWebhook(
            url=settings.webhook_url,
            secret=secret,
            timeout=settings.webhook_timeout,
            retries=settings.webhook_retries,
            backoff_base=settings.backoff_base,
            backoff_max=settings.backoff_max,
        )
        if settings.webhook_url and secret
        else None
    )
    analyzer = CallAnalyzer(
        client=client,
        model=settings.model,
        actions=settings.actions,
        fields=fields,
    )
    try:
        yield AnalysisWorker(
            store=store,
            queue=queue,
            analyzer=analyzer,
            settings=settings,
            embedder=embedder or default_embedder(),
            webhook=webhook,
            prices=prices,
        )
    finally:
        if webhook is not None:
            await webhook.aclose(grace=settings.stop_grace)
        await client.close()
