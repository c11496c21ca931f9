"""What protects callers: keyed identities, scrubbing, the fact gate, erasure to disk."""
