"""Assembling a call: settings, services, caller identification, prompts, tools, pipeline."""
