"""Everything that lives in Redis, and its layout: callers, keys, the queue, indexes, audit."""
