"""Rapport's custom Pipecat frame processors, one per module."""
