"""Everything about remembering callers; usable without Pipecat."""
