"""``python runner.py dashboard``: the web dashboard on its own server.

    python runner.py dashboard [--host 127.0.0.1] [--port 7870] [--agent A]

Beyond loopback (``--host 0.0.0.0``) it needs ``RAPPORT_DASHBOARD_PASSWORD``; without one it
names the variable on one line and exits with code 2. The bot's own server (``python
runner.py``) serves the same dashboard at ``/dashboard``.
"""

from __future__ import annotations

import argparse
import os
import sys

from memory.errors import RapportMemoryError
from memory.privacy.identity import validate_agent_id
from memory.runtime import memory_runtime
from memory.store.queue import AnalysisQueue

DEFAULT_PORT = 7870


def add_dashboard_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``dashboard [--host H] [--port P] [--agent A]`` on a parent parser."""
    dashboard = subparsers.add_parser(
        "dashboard", help="the web dashboard: follow-ups, callers, queue"
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dashboard.add_argument("--port", type=int, default=DEFAULT_PORT)
    dashboard.add_argument(
        "--agent",
        default=os.environ.get("RAPPORT_AGENT_ID", "default"),
        help="whose calls and callers (default: RAPPORT_AGENT_ID)",
    )
    dashboard.set_defaults(handler=run_dashboard_command)


async def run_dashboard_command(args: argparse.Namespace) -> int:
    """Serve the dashboard until interrupted; the exit code (2: a setting is missing)."""
    # Imported here: the web stack is not needed by the other commands.
    import uvicorn

    from bot.callback import CallbackDesk
    from bot.settings import BotSettings
    from web.dashboard import DashboardSettings, dashboard_app, dashboard_memory
    from web.dashboard.throttle import SharedThrottle

    try:
        agent_id = validate_agent_id(args.agent)
        dashboard = DashboardSettings()
        access = dashboard.access(args.host)
        settings = BotSettings()  # the business's name, hours and Twilio account
        async with memory_runtime() as runtime:
            prefix = runtime.settings.key_prefix
            access.throttle = SharedThrottle(lambda: runtime.redis, prefix=prefix)
            queue = AnalysisQueue(runtime.redis, prefix=prefix)
            desk = CallbackDesk(runtime=runtime, agent_id=agent_id, settings=settings)
            memory = dashboard_memory(runtime, queue, agent_id=agent_id, callbacks=desk)
            app = dashboard_app(access=access, memory=lambda: memory, zone=dashboard.zone())
            print(f"Dashboard of {agent_id} at http://{args.host}:{args.port}/dashboard")
            config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
            await uvicorn.Server(config).serve()
            return 0
    except RapportMemoryError as e:
        print(f"rapport dashboard: {e}", file=sys.stderr)
        return 2
