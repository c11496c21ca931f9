"""The keyword arguments a Rapport processor passes on to Pipecat's ``FrameProcessor``.

Pipecat's ``BaseObject`` takes ``**kwargs`` and drops what it does not know, so a misspelt or
misplaced option (``load_budget_s=`` instead of ``params=Params(load_budget_s=...)``) would be
silently ignored. Every Rapport processor hands its extra keywords through
:func:`pipecat_options` first, which refuses anything Pipecat's constructors do not name.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from pipecat.processors.frame_processor import FrameProcessor
from pipecat.utils.base_object import BaseObject


def _keyword_parameters(*classes: type) -> frozenset[str]:
    return frozenset(
        name
        for cls in classes
        for name, parameter in inspect.signature(cls).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    )


#: What ``FrameProcessor`` and ``BaseObject`` accept (``name``, ``metrics``, ``task_manager``, …).
PIPECAT_KEYWORDS = _keyword_parameters(FrameProcessor, BaseObject)


def pipecat_options(
    processor: str, options: Mapping[str, Any], *, direct: bool = False
) -> dict[str, Any]:
    """``options`` if Pipecat's ``FrameProcessor`` knows every one of them.

    Args:
        processor: The processor's class name, for the error.
        options: The keyword arguments its ``__init__`` did not take itself.
        direct: Whether the processor runs in Pipecat's direct mode unless ``options`` say
            otherwise: it handles each frame in the task that pushed it, with no queue and
            task of its own.

    Raises:
        TypeError: An option Pipecat would silently drop (as Python does for a bad keyword).
    """
    unknown = sorted(set(options) - PIPECAT_KEYWORDS)
    if unknown:
        raise TypeError(f"{processor}() got unexpected keyword arguments: {', '.join(unknown)}")
    return {"enable_direct_mode": direct, **options}
