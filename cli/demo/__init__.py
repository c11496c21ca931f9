"""``python runner.py demo``: a week of calls in a data folder, to see Rapport before any key.

    python runner.py demo [--data DIR] [--agent demo] [--fields [FILE]]

Plays the week of :mod:`cli.demo.week` (20 calls from 8 callers of a dental clinic, in English,
Spanish and Catalan) through the product itself: each call is the bot's own pipeline
(:func:`bot.pipeline.build_call`, with the real ``AnthropicLLMService``, memory, recorder and
call report) on a text line (:mod:`bot.text_line`: words in place of audio), and every ended
call is analysed by the real analysis worker. Only Claude is stood in for, by a scripted model
on loopback that both SDKs reach through their ``base_url`` (:mod:`cli.demo.model`): no key
is needed and nothing leaves the machine. Then ``python runner.py dashboard --agent demo`` shows
the week: follow-ups, callers and their facts, a superseded fact, a transfer, a dead letter,
and with ``--fields`` the clinic's own fields (``examples/clinic_fields.yaml``).

The data goes to the embedded Redis of the data folder (``RAPPORT_DATA_DIR``, default
``./data``); with ``REDIS_URL`` set, or calls of the agent already there, the demo refuses (exit
2) rather than mix its calls with real ones.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from cli.dashboard import DEFAULT_PORT
from memory.errors import ConfigurationError, RapportMemoryError
from memory.privacy.identity import validate_agent_id
from memory.settings import MemorySettings

DEFAULT_AGENT = "demo"
CLINIC_FIELDS = Path(__file__).resolve().parents[2] / "examples" / "clinic_fields.yaml"


def add_demo_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``demo [--data DIR] [--agent A] [--fields [FILE]]`` on a parent parser."""
    demo = subparsers.add_parser(
        "demo", help="fill a data folder with a demo week of calls (no keys needed)"
    )
    demo.add_argument(
        "--data", type=Path, default=None, help="data folder (default: RAPPORT_DATA_DIR or ./data)"
    )
    demo.add_argument("--agent", default=DEFAULT_AGENT, help=f"agent id (default {DEFAULT_AGENT})")
    demo.add_argument(
        "--fields",
        nargs="?",
        type=Path,
        const=CLINIC_FIELDS,
        default=None,
        help="analyse with the clinic's own fields (default file: examples/clinic_fields.yaml)",
    )
    demo.set_defaults(handler=run_demo_command)


async def run_demo_command(args: argparse.Namespace) -> int:
    """Play the demo week into the data folder; the exit code (2: refused, one line why)."""
    try:
        agent_id = validate_agent_id(args.agent)
        settings = MemorySettings()
        if args.data is not None:
            settings = settings.model_copy(update={"data_dir": args.data})
        if settings.redis_url:
            raise ConfigurationError(
                "REDIS_URL is set: the demo only fills the embedded Redis of a data folder "
                "(unset REDIS_URL for the demo)"
            )
        # Imported here: the bot's pipeline is slow to import and no other command needs it.
        from cli.demo.play import BUSINESS, play_week
        from cli.logs import configure_logging

        configure_logging("WARNING")  # the week's story is the dashboard's to tell
        started = time.perf_counter()
        calls = await play_week(settings, agent_id=agent_id, fields=args.fields)
    except RapportMemoryError as e:
        print(f"rapport demo: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    print(f"Played {calls} calls of {BUSINESS} into {settings.data_dir} in {seconds:.0f} s.")
    data = "" if args.data is None else f"RAPPORT_DATA_DIR={shlex.quote(str(args.data))} "
    print(f"See them: {data}python runner.py dashboard --agent {agent_id}")
    print(f"then open http://127.0.0.1:{DEFAULT_PORT}/dashboard")
    return 0
