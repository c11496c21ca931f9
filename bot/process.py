"""One bot process: what its calls share, and how each call is taken.

:class:`RapportBot` opens memory once, shares one Anthropic client between calls, runs the
post-call analysis worker in the background (``RAPPORT_RUN_WORKER``), and at shutdown waits for
the calls still being recorded to be closed and queued. :meth:`RapportBot.run` takes one call
from Pipecat's development runner: it identifies the caller and starts loading their memory
before the transport and pipeline are built.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

from anthropic import AsyncAnthropic
from loguru import logger
from pipecat.pipeline.worker import PipelineParams
from pipecat.runner.types import (
    DailyRunnerArguments,
    RunnerArguments,
    SmallWebRTCRunnerArguments,
    WebSocketRunnerArguments,
)
from pipecat.runner.utils import create_transport, parse_telephony_websocket
from pipecat.transports.base_transport import BaseTransport, TransportParams
from redis.asyncio import Redis

from bot import twilio
from bot.callback import CallbackDesk, CallbackError, CallbackPlacer
from bot.identify import identify_call, serves_on_loopback
from bot.pipeline import PreparedCall, build_call, prepare_call
from bot.services import ServicesFactory, anthropic_client, build_services
from bot.settings import BotSettings
from bot.transfer import DailyHandoff, LineHandoff
from bot.trust import UsedTokens
from bot.wording import prompt_template
from memory.analysis.settings import AnalysisSettings
from memory.backend.connect import display_url
from memory.backoff import backoff_delay
from memory.calls.recorder import CallRecorder
from memory.errors import ConfigurationError, MemoryUnavailableError
from memory.health import ServiceHealth, check_health
from memory.models import CallerMemory
from memory.recall.embeddings import Embedder, default_embedder
from memory.recall.ranking import select_for_call_start
from memory.recall.render import fill_template
from memory.report import load_prices
from memory.runtime import (
    MemoryAccess,
    MemoryRuntime,
    freeze_startup_objects,
    memory_runtime,
    open_memory,
)
from memory.store.queue import AnalysisQueue

#: How long shutdown waits for ended calls to be closed and queued for analysis.
DRAIN_TIMEOUT_S = 10.0
#: Longest wait between two attempts to open memory that failed at boot.
MEMORY_RETRY_CAP_S = 30.0
#: WebSocket close code for a stream refused for what it claimed (RFC 6455).
POLICY_VIOLATION = 1008


class RapportBot:
    """Everything one bot process shares between its calls.

    Args:
        settings: The agent, its keys and options.
        analysis: Settings of the in-process analysis worker and the queue (default: from
            the environment).
        services: Builds each call's STT, LLM and TTS (tests give text in place of audio).
    """

    def __init__(
        self,
        settings: BotSettings,
        *,
        analysis: AnalysisSettings | None = None,
        services: ServicesFactory = build_services,
    ) -> None:
        self._settings = settings
        self._analysis = analysis or AnalysisSettings()
        self._services = services
        self._template = prompt_template(settings)
        self._started = False
        self._start_lock = asyncio.Lock()
        self._client: AsyncAnthropic | None = None
        self._runtime: MemoryRuntime | None = None
        self._memory: MemoryAccess | None = None
        used = UsedTokens(self.redis, prefix=settings.memory.key_prefix)
        self.stream_tokens = twilio.stream_tokens(settings, used)
        self._stop_worker = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._callbacks: CallbackPlacer | None = None
        self._placing: asyncio.Task[None] | None = None
        self._memory_retry: asyncio.Task[None] | None = None

    @property
    def memory(self) -> MemoryAccess | None:
        """The process's memory once :meth:`start` opened it (None: off or unavailable)."""
        return self._memory

    def redis(self) -> Redis | None:
        """The process's Redis client once memory is open (None before, or with memory off)."""
        return self._memory.runtime.redis if self._memory is not None else None

    @property
    def call_backs(self) -> CallbackPlacer | None:
        """Places the call backs asked for, once memory is open (None: Twilio cannot)."""
        return self._callbacks

    @property
    def _anthropic(self) -> AsyncAnthropic:
        if self._client is None:
            raise RuntimeError("RapportBot.start() has not run")
        return self._client

    @property
    def anthropic(self) -> AsyncAnthropic:
        """The process's Anthropic client (once started), shared with the platform endpoints."""
        return self._anthropic

    @property
    def prompt_template(self) -> str:
        """The system prompt template, business filled in, ``{{memory}}`` still in it."""
        return self._template

    async def start(self) -> None:
        """Open memory, warm the embedder, start the analysis worker (once; later calls no-op).

        A Redis that cannot be reached leaves memory off for this process: calls go on.

        Raises:
            ConfigurationError: A setting is missing or contradictory.
        """
        async with self._start_lock:
            if self._started:
                return
            self._client = anthropic_client(self._settings)
            if self._settings.memory_enabled:
                await self._open_memory()
            else:
                logger.info(
                    "Memory is off (RAPPORT_MEMORY_ENABLED=false): callers are not remembered"
                )
            self._started = True

    async def _open_memory(self) -> None:
        if not await self._try_open_memory():
            logger.warning("Memory is unavailable: calls go on without it; retrying meanwhile")
            self._memory_retry = asyncio.create_task(self._retry_memory(), name="memory-retry")

    async def _retry_memory(self) -> None:
        """Open memory in the background until it opens (the embedded server failed at boot)."""
        attempt = 0
        while True:
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt, base=1.0, cap=MEMORY_RETRY_CAP_S))
            if await self._try_open_memory():
                return

    async def _try_open_memory(self) -> bool:
        try:
            self._runtime = await open_memory(self._settings.memory)
        except (MemoryUnavailableError, ConfigurationError):
            # A data folder or pepper file that broke after the start-up check (which exits on
            # them) is retried like a Redis that went away: calls go on meanwhile.
            return False
        memory = self._settings.memory
        where = (
            f"Redis at {display_url(memory.redis_url)}"
            if memory.redis_url
            else f"the embedded Redis in {memory.data_dir}"
        )
        logger.info("Memory is on: {} (key prefix {})", where, memory.key_prefix)
        embedder = default_embedder()
        queue = AnalysisQueue(
            self._runtime.redis,
            prefix=self._settings.memory.key_prefix,
            maxlen=self._analysis.queue_maxlen,
        )
        self._memory = MemoryAccess(runtime=self._runtime, queue=queue, embedder=embedder)
        # The model loads on first use (~0.2 s), and the agent's purpose is embedded once per
        # process: both now, not in the first caller's call start.
        await asyncio.to_thread(
            select_for_call_start,
            CallerMemory(),
            purpose=self._settings.agent_purpose,
            token_budget=1,
            embedder=embedder,
        )
        self._start_placing_callbacks(self._runtime)
        freeze_startup_objects()
        if self._settings.run_worker:
            self._worker = asyncio.create_task(self._run_worker(embedder), name="analysis-worker")
        return True

    def _start_placing_callbacks(self, runtime: MemoryRuntime) -> None:
        """Place the call backs asked for (*Have Rapport call back*), when Twilio can."""
        if runtime.numbers is None or not (self.stream_tokens and self._settings.public_url):
            return
        desk = CallbackDesk(
            runtime=runtime, agent_id=self._settings.agent_id, settings=self._settings
        )
        try:
            desk.account()
        except CallbackError:
            return  # no RAPPORT_CALLBACK_FROM: nothing to place calls from
        self._callbacks = CallbackPlacer(desk, public_host=self._settings.public_url)
        self._placing = asyncio.create_task(
            self._callbacks.run(self._stop_worker), name="call-backs"
        )

    async def _run_worker(self, embedder: Embedder) -> None:
        # Imported here: the analysis pulls in its own client and prompts.
        from memory.analysis.worker import analysis_worker

        settings = self._settings.memory.for_worker()
        try:
            async with memory_runtime(settings) as runtime:
                queue = AnalysisQueue(
                    runtime.redis, prefix=settings.key_prefix, maxlen=self._analysis.queue_maxlen
                )
                async with analysis_worker(
                    runtime.store,
                    queue,
                    self._analysis,
                    embedder=embedder,
                    prices=load_prices(settings.prices_file),
                ) as worker:
                    await worker.run(self._stop_worker)
        except Exception as e:
            # Calls go on without analysis; ended calls wait in the queue for a worker. The type
            # only: a message may quote call content.
            logger.error("The analysis worker stopped: {}", type(e).__name__)

    async def health(self) -> ServiceHealth:
        """What ``GET /health`` answers: Redis, the analysis worker's heartbeat, the queue."""
        if not self._settings.memory_enabled:
            return await check_health(None, heartbeat_max_age=0)
        if self._memory is None:  # not started, or Redis was unreachable at start
            return ServiceHealth(healthy=False, failing=["redis"], redis="down")
        return await check_health(
            self._memory.queue,
            heartbeat_max_age=self._settings.memory.worker_heartbeat_max_age,
            history=self._memory.runtime.store.history,
        )

    async def stop(self, *, drain_timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Close and queue the calls still being recorded, stop the worker, close memory."""
        try:
            async with asyncio.timeout(drain_timeout):
                await CallRecorder.drain_all()
        except TimeoutError:
            logger.warning("Some ended calls were not queued before shutdown; the sweeper will")
        if self._memory_retry is not None:
            self._memory_retry.cancel()
            with suppress(asyncio.CancelledError):
                await self._memory_retry
        self._stop_worker.set()
        for task in (self._worker, self._placing):
            if task is not None:
                with suppress(asyncio.CancelledError):
                    await task
        if self._runtime is not None:
            await self._runtime.aclose()
        if self._client is not None:
            await self._client.close()
        self._started = False

    async def run(self, runner_args: RunnerArguments) -> None:
        """Take one call the development runner started, until it ends."""
        await self.start()
        telephony = None
        stream_trust = None
        if isinstance(runner_args, WebSocketRunnerArguments):
            if runner_args.transport_type == "websocket":  # /ws-client: no phone call
                raise ValueError("Rapport takes calls over WebRTC, Daily or Twilio")
            telephony = await parse_telephony_websocket(runner_args.websocket)
            if telephony[0] == "twilio":
                stream_trust = await twilio.stream_trust(telephony[1], self.stream_tokens)
                if stream_trust is None:
                    logger.warning("Closed a Twilio media stream with no valid call token")
                    await runner_args.websocket.close(code=POLICY_VIOLATION)
                    return
        origin = identify_call(
            runner_args,
            telephony=telephony,
            stream_trust=stream_trust,
            room_callers=self._settings.test_room or serves_on_loopback(runner_args),
            dialin_signed=bool(self._settings.daily_dialin_hmac),
        )
        prepared = prepare_call(origin, settings=self._settings, memory=self._memory)
        if telephony is not None and telephony[0] == "twilio":
            prepared.opening = await self._callback_opening(telephony[1], prepared)
        try:
            transport, params, handoff = await self._transport(runner_args, telephony)
            services = self._services(
                self._settings,
                client=self._anthropic,
                system_instruction=fill_template(self._template, ""),
            )
            call = build_call(
                prepared,
                settings=self._settings,
                services=services,
                memory=self._memory,
                prompt_template=self._template,
                transport=transport,
                params=params,
                enable_rtvi=isinstance(runner_args, SmallWebRTCRunnerArguments),
                handoff=handoff,
            )
        except BaseException:
            prepared.discard()
            raise
        await call.run(handle_sigint=runner_args.handle_sigint)

    async def _callback_opening(self, call_data: Any, prepared: PreparedCall) -> str | None:
        """A call back's opening line, when this Twilio call is one Rapport placed."""
        ref = twilio.callback_of(call_data, agent_id=self._settings.agent_id)
        if ref is None or self._callbacks is None or prepared.caller is None:
            return None
        if ref.caller_key != prepared.caller.key:
            return None  # the number answered is not the one the call back was for
        try:
            return await self._callbacks.opening(prepared.caller, ref.call_id)
        except MemoryUnavailableError:
            return None

    async def _transport(
        self, runner_args: RunnerArguments, telephony: tuple[str, Any] | None
    ) -> tuple[BaseTransport, PipelineParams, LineHandoff | None]:
        if isinstance(runner_args, SmallWebRTCRunnerArguments):
            from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

            webrtc = SmallWebRTCTransport(
                webrtc_connection=runner_args.webrtc_connection,
                params=TransportParams(audio_in_enabled=True, audio_out_enabled=True),
            )
            return webrtc, PipelineParams(), None
        if isinstance(runner_args, DailyRunnerArguments):
            from pipecat.transports.daily.transport import DailyParams, DailyTransport

            daily = await create_transport(
                runner_args,
                {"daily": lambda: DailyParams(audio_in_enabled=True, audio_out_enabled=True)},
            )
            assert isinstance(daily, DailyTransport)
            return daily, PipelineParams(), DailyHandoff(daily)
        if isinstance(runner_args, WebSocketRunnerArguments) and telephony is not None:
            kind, call_data = telephony
            telephony_params = PipelineParams(
                audio_in_sample_rate=twilio.SAMPLE_RATE, audio_out_sample_rate=twilio.SAMPLE_RATE
            )
            if kind == "twilio":
                phone, handoff = twilio.twilio_transport(
                    runner_args.websocket, call_data, settings=self._settings
                )
                return phone, telephony_params, handoff
            from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams

            params = FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True)
            other = await create_transport(runner_args, {kind: lambda: params})
            return other, telephony_params, None
        raise ValueError(f"Unsupported session: {type(runner_args).__name__}")


_bot: RapportBot | None = None


def serve(settings: BotSettings, *, services: ServicesFactory = build_services) -> RapportBot:
    """Make a bot for ``settings`` the one that takes this process's calls."""
    global _bot
    _bot = RapportBot(settings, services=services)
    return _bot


async def serve_call(runner_args: RunnerArguments) -> None:
    """Take one call on the process's bot (what ``bot()`` in ``runner.py`` does).

    A runner mode that serves no app (``-d``, straight into a Daily room) never called
    :func:`serve`: the bot is then made from the environment, and started on its first call.
    """
    bot = _bot or serve(BotSettings())
    await bot.run(runner_args)
