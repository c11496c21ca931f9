"""Rapport's memory for other frameworks (optional extras)."""
