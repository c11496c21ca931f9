"""A valid answer of the post-call analysis, shared by the analysis and worker tests."""

from __future__ import annotations

from typing import Any


def answer(**overrides: Any) -> dict[str, Any]:
    """A valid tool input for the analysis, with some fields replaced."""
    return {
        "summary": "Marta ordered a cake for Friday. The agent will send a quote today.",
        "urgency": 3,
        "action": "send_quote",
        "sentiment": "satisfied",
        "language": "en-GB",
        "caller_name": "Marta",
        "facts": [{"text": "Caller orders cakes for Fridays", "confidence": 0.8, "supersedes": []}],
    } | overrides
