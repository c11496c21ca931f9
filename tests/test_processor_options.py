"""Rapport's processors refuse keyword arguments Pipecat would silently drop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pipecat.processors.frame_processor import FrameProcessor

from processors.call_handoff import CallHandoffProcessor
from processors.end_of_call import EndOfCallProcessor
from processors.memory_context import MemoryContextProcessor
from processors.tool_silence import ToolSilenceGuard


async def _nothing(*_: object) -> None:
    return None


PROCESSORS: dict[str, Callable[..., FrameProcessor]] = {
    "memory_context": lambda **extra: MemoryContextProcessor(
        memory=None, prompt_template="", opening=lambda *_: "", voices={}, **extra
    ),
    "tool_silence": lambda **extra: ToolSilenceGuard(**extra),
    "end_of_call": lambda **extra: EndOfCallProcessor(recorder=None, **extra),
    "call_handoff": lambda **extra: CallHandoffProcessor(
        handoff=None,  # type: ignore[arg-type]
        on_done=_nothing,
        on_failed=_nothing,
        end_reason="transferred",
        **extra,
    ),
}


@pytest.mark.parametrize("make", PROCESSORS.values(), ids=PROCESSORS.keys())
def test_an_unknown_keyword_is_a_type_error(make: Callable[..., Any]) -> None:
    # The test that once passed load_budget_s and purpose here ran with neither.
    with pytest.raises(TypeError, match="load_budget_s"):
        make(load_budget_s=0.1)


@pytest.mark.parametrize("make", PROCESSORS.values(), ids=PROCESSORS.keys())
def test_pipecat_s_own_keywords_still_reach_it(make: Callable[..., Any]) -> None:
    assert make(name="named").name == "named"
