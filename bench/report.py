"""What the benchmarks share: the event loop, percentiles, progress on stderr, the table."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import track
from rich.table import Table

_T = TypeVar("_T")


def _loop_factory() -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    try:
        import uvloop
    except ImportError:  # not installed on Windows
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


#: The event loop benchmarks run on: the bot's. Pipecat's runner serves calls under uvicorn,
#: whose "auto" loop is uvloop when it is installed (Rapport depends on it, Windows aside).
EVENT_LOOP, _NEW_LOOP = _loop_factory()


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run a benchmark's ``main`` to completion on :data:`EVENT_LOOP`, as ``asyncio.run`` does."""
    with asyncio.Runner(loop_factory=_NEW_LOOP) as runner:
        return runner.run(main)


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-quantile (0-1) of samples, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def print_report(
    title: str, result: Mapping[str, Any], *, targets: Mapping[str, str], as_json: bool
) -> None:
    """Print ``result`` as one JSON object, or as a table of metric, value and target."""
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    for name, value in result.items():
        table.add_row(name, str(value), targets.get(name, ""))
    Console().print(table)


def progress(items: Iterable[_T], description: str, *, total: int | None = None) -> Iterator[_T]:
    """``items``, with a progress bar on stderr: long runs show they are alive, stdout stays clean.

    The bar disappears when done, so a ``--json`` run's output is the JSON alone.
    """
    console = Console(stderr=True)
    yield from track(items, description=description, total=total, console=console, transient=True)
