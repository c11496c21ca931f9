"""``python runner.py``: check the settings, then serve calls with Pipecat's development runner.

One FastAPI server on localhost:7860 with the local WebRTC room (the prebuilt client at ``/``;
``--caller`` sets who is calling), Twilio (our TwiML at ``POST /``, Media Streams at ``/ws``),
the dashboard (``/dashboard``; beyond loopback only with ``RAPPORT_DASHBOARD_PASSWORD``) and,
with ``-t daily``, the Daily dial-in webhook (``/daily-dialin-webhook``). The runner calls
``bot(runner_args)`` in ``runner.py`` once per call, which hands it to
:func:`bot.process.serve_call`.

Nothing here imports Pipecat before the settings are checked: a missing key is one line on
stderr and exit code 2, fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from loguru import logger
from pydantic import ValidationError
from pydantic_settings import SettingsError

from bot.settings import KEYS_FOR_SERVICES, KEYS_FOR_TRANSPORT, BotSettings, public_host
from cli.logs import configure_logging, install_redaction, log_level
from memory.analysis.settings import AnalysisSettings
from memory.errors import ConfigurationError
from memory.privacy.identity import load_pepper
from memory.privacy.numbers import load_number_vault
from memory.settings import invalid_settings

if TYPE_CHECKING:
    from bot.process import RapportBot
    from bot.services import ServicesFactory
    from web.dashboard import DashboardMemory


@asynccontextmanager
async def _lifespan(rapport: RapportBot, log_level: str, app: Any) -> AsyncIterator[None]:
    # Pipecat's runner sets DEBUG logging before the server starts; ours replaces it here.
    configure_logging(log_level)
    await rapport.start()
    try:
        yield
    finally:
        await rapport.stop()


def _options(argv: Sequence[str]) -> argparse.Namespace:
    """The runner options Rapport needs to know before the runner parses them all."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-t", "--transport")
    parser.add_argument("-x", "--proxy")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("--host", default="localhost")
    return parser.parse_known_args(list(argv))[0]


def check_settings(transport: str | None, *, proxy: str | None = None) -> BotSettings:
    """Load the settings and check every key ``transport`` needs (None: all transports).

    Args:
        transport: The runner's ``-t`` (None: every transport at once).
        proxy: The runner's ``-x``, the public host; it takes the place of
            ``RAPPORT_PUBLIC_URL``.

    Raises:
        ConfigurationError: One line naming what is missing or wrong.
    """
    if transport is not None and transport not in KEYS_FOR_TRANSPORT:
        raise ConfigurationError(
            f"-t {transport}: Rapport does not serve that transport; it serves "
            f"{', '.join(KEYS_FOR_TRANSPORT)}"
        )
    try:
        settings = BotSettings()
        analysis = AnalysisSettings()
    except (ValidationError, SettingsError) as e:
        raise invalid_settings(e) from None
    if proxy:
        try:
            settings = settings.model_copy(update={"public_url": public_host(proxy)})
        except ValueError as e:
            raise ConfigurationError(f"-x/--proxy: {e}") from e
    settings.require(*KEYS_FOR_SERVICES, *settings.keys_for(transport))
    settings.system_prompt_template()
    analysis.analysis_fields()
    if settings.run_worker:
        analysis.webhook_signing_secret()
    memory = settings.memory
    if settings.memory_enabled:  # last: it may generate the pepper, and says so
        memory.check_data_dir()
        load_pepper(
            redis_url=memory.redis_url,
            pepper=memory.pepper,
            data_dir=memory.data_dir,
            pepper_file=memory.pepper_file,
        )
        if memory.callback_numbers:
            load_number_vault(memory.number_key_file)
    return settings


def _dashboard_memory(
    rapport: RapportBot, settings: BotSettings
) -> Callable[[], DashboardMemory | None]:
    """What the dashboard reads: the bot's own memory, once its start-up opened it."""
    from bot.callback import CallbackDesk
    from web.dashboard import dashboard_memory

    opened: list[DashboardMemory] = []

    def current() -> DashboardMemory | None:
        if not opened and (memory := rapport.memory) is not None:
            agent_id = settings.agent_id
            desk = CallbackDesk(runtime=memory.runtime, agent_id=agent_id, settings=settings)
            opened.append(
                dashboard_memory(memory.runtime, memory.queue, agent_id=agent_id, callbacks=desk)
            )
        return opened[0] if opened else None

    return current


def _runner_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runner.py", description="Rapport phone agent")
    parser.add_argument(
        "--caller",
        help="caller number for calls from the local WebRTC room (e.g. +14155550123)",
    )
    return parser


def run_bot(argv: Sequence[str], *, services: ServicesFactory | None = None) -> int:
    """``python runner.py [runner options]``: serve calls until interrupted; the exit code.

    Args:
        argv: The runner's options (``-t twilio``, ``--port``, ``--caller``...).
        services: Builds each call's STT, LLM and TTS (default: the cloud services; the
            Twilio test serves text in place of audio).
    """
    sys.argv = ["runner.py", *argv]
    # The E5 engine's OpenMP threads spin while waiting; on a busy machine that stalls call
    # starts for seconds. Must be set before the engine loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if {"-h", "--help"} & set(argv):
        from pipecat.runner.run import main as runner_help

        runner_help(_runner_parser())  # prints the options and exits
    options = _options(argv)
    from web.dashboard import DashboardSettings

    try:
        level = "DEBUG" if options.verbose else log_level()
        dashboard = DashboardSettings()
        dashboard_access = dashboard.access(options.host)
        settings = check_settings(options.transport, proxy=options.proxy)
    except (ValidationError, SettingsError) as e:
        print(f"rapport: {invalid_settings(e)}", file=sys.stderr)
        return 2
    except ConfigurationError as e:
        print(f"rapport: {e}", file=sys.stderr)
        return 2
    install_redaction()
    if options.transport == "daily" and not settings.daily_dialin_hmac:
        logger.warning(
            "Daily dial-in webhooks are not signature-checked (RAPPORT_DAILY_DIALIN_HMAC is "
            "unset): every Daily caller is unverified"
        )
    # Imported only now: the runner is slow to import. Its own .env load is switched off by
    # cli.environment.read_env_file, which read .env before any setting.
    from pipecat.runner.run import app, main

    from bot import process
    from bot.daily import DialinSignatureCheck
    from bot.room_gate import ROOM_TRANSPORTS, RoomGate
    from bot.twilio import add_twilio_routes
    from web.dashboard import add_dashboard_routes
    from web.dashboard.throttle import SharedThrottle
    from web.health import health_router, metrics_bearer_token
    from web.platform_calls import PlatformCalls
    from web.platforms import add_platform_routes

    rapport = process.serve(settings, services=services or process.build_services)
    # Failed logins counted in the Redis every bot shares, once memory is open.
    dashboard_access.throttle = SharedThrottle(rapport.redis, prefix=settings.memory.key_prefix)
    # Registered before main() adds the runner's routes, so ours win.
    add_twilio_routes(
        app,
        settings=settings,
        tokens=rapport.stream_tokens,
        call_backs=lambda: rapport.call_backs,
    )
    add_dashboard_routes(
        app,
        access=dashboard_access,
        memory=_dashboard_memory(rapport, settings),
        zone=dashboard.zone(),
    )
    app.include_router(
        health_router(check=rapport.health, metrics_token=metrics_bearer_token(settings.memory))
    )
    platforms = PlatformCalls(
        settings=settings,
        prompt_template=rapport.prompt_template,
        memory=lambda: rapport.memory,
        anthropic=lambda: rapport.anthropic,
    )
    add_platform_routes(app, platforms)
    if settings.daily_dialin_hmac:
        app.add_middleware(DialinSignatureCheck, secret=settings.daily_dialin_hmac)
    if options.transport not in ROOM_TRANSPORTS:
        app.add_middleware(RoomGate)
    app.router.lifespan_context = lambda app: _lifespan(rapport, level, app)
    main(_runner_parser())
    return 0
