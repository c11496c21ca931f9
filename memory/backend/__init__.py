"""The Redis underneath memory: connecting, the embedded server, coalesced reads, outages."""
