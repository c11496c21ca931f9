"""Language tags as Rapport meets them: the caller's language and the voice that speaks it."""

from __future__ import annotations


def primary_language(tag: str) -> str:
    """The primary subtag of a language tag, lower-cased: ``es-ES`` -> ``es``."""
    return tag.split("-")[0].lower()


def voice_locale(voice: str) -> str:
    """The locale an Azure voice speaks: ``es-ES-ElviraNeural`` -> ``es-ES``."""
    return "-".join(voice.split("-")[:2])
