"""``python runner.py worker``: the standalone analysis worker.

    python runner.py worker [--concurrency N]        # analyse ended calls until Ctrl-C / SIGTERM
    python runner.py worker --retry-dead             # queue the dead letters again, then exit
    python runner.py worker --port 9100              # also serve GET /health and GET /metrics

Several workers may run at once, on one machine or many: they share the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from cli.format import console
from memory.analysis.settings import AnalysisSettings
from memory.errors import RapportMemoryError
from memory.health import ServiceHealth, check_health
from memory.report import load_prices
from memory.runtime import MemoryRuntime, memory_runtime
from memory.settings import MemorySettings
from memory.store.queue import AnalysisQueue


def add_worker_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``worker [--retry-dead] [--concurrency N]`` on a parent parser."""
    worker = subparsers.add_parser("worker", help="analyse ended calls (standalone worker)")
    worker.add_argument(
        "--retry-dead", action="store_true", help="queue every dead letter again, then exit"
    )
    worker.add_argument(
        "--concurrency", type=int, default=None, help="calls analysed at once (default 4)"
    )
    worker.add_argument(
        "--port", type=int, default=None, help="serve GET /health and GET /metrics on this port"
    )
    worker.add_argument(
        "--host", default="127.0.0.1", help="where --port listens (default 127.0.0.1)"
    )
    worker.set_defaults(handler=run_worker_command)


async def run_worker_command(args: argparse.Namespace) -> int:
    """Run the worker until SIGINT/SIGTERM, or re-queue the dead letters; the exit code."""
    try:
        settings = AnalysisSettings()
        if args.concurrency is not None:
            settings = settings.model_copy(update={"concurrency": max(1, args.concurrency)})
        if not args.retry_dead:
            settings.require_api_key()
            settings.webhook_signing_secret()
            settings.analysis_fields()
        memory_settings = MemorySettings().for_worker()
        async with memory_runtime(memory_settings) as runtime:
            queue = AnalysisQueue(
                runtime.redis,
                prefix=memory_settings.key_prefix,
                maxlen=settings.queue_maxlen,
            )
            if args.retry_dead:
                requeued = await queue.retry_dead()
                console.print(f"Queued {requeued} dead letters again.")
                return 0
            await _work(runtime, queue, settings, args=args, memory=memory_settings)
            return 0
    except RapportMemoryError as e:
        # One plain line (no rich wrapping) naming what is wrong, e.g. the missing variable.
        print(f"rapport worker: {e}", file=sys.stderr)
        return 2


async def _work(
    runtime: MemoryRuntime,
    queue: AnalysisQueue,
    settings: AnalysisSettings,
    *,
    args: argparse.Namespace,
    memory: MemorySettings,
) -> None:
    # Imported here: it pulls in the Anthropic SDK, slow to import for the other commands.
    from memory.analysis.worker import analysis_worker, single_threaded_embeddings
    from web.health import metrics_bearer_token, serve_health

    single_threaded_embeddings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    prices = load_prices(memory.prices_file)
    async with analysis_worker(runtime.store, queue, settings, prices=prices) as worker:
        if args.port is None:
            await worker.run(stop)
            return

        async def check() -> ServiceHealth:
            return await check_health(
                queue,
                heartbeat_max_age=memory.worker_heartbeat_max_age,
                history=runtime.store.history,
            )

        http = serve_health(
            check=check,
            host=args.host,
            port=args.port,
            stop=stop,
            metrics_token=metrics_bearer_token(memory),
        )
        await asyncio.gather(worker.run(stop), http)
