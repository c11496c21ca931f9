"""One call outside Pipecat (memory/session.py): the open-call cache, the trust policy."""

from __future__ import annotations

from memory.calls.policy import CallPolicy
from memory.calls.session import SessionCache, open_call
from memory.models import CallTrust
from tests.support.call_harness import ANA, Line, runtime_of


def test_the_cache_is_bounded_and_forgets_idle_calls() -> None:
    now = [0.0]
    cache: SessionCache[str] = SessionCache(max_entries=2, ttl_s=10, clock=lambda: now[0])
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # "a" is now the most recently used
    cache.put("c", "C")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
    now[0] = 9
    assert cache.get("c") == "C"  # used at 9: kept until 19
    now[0] = 15
    assert (cache.get("a"), cache.get("c")) == (None, "C")
    assert cache.pop("c") == "C" and len(cache) == 0


async def test_unverified_callers_follow_the_policy_and_anonymous_ones_are_never_recorded(
    line: Line,
) -> None:
    assert line.memory is not None
    runtime, queue = runtime_of(line), line.memory.queue

    async def call(number: str | None, trust: CallTrust, *, serve_unverified: bool) -> bool:
        session = await open_call(
            runtime=runtime,
            queue=queue,
            number=number,
            call_id="c",
            trust=trust,
            policy=CallPolicy(agent_id="bakery", serve_unverified=serve_unverified),
            door="test",
        )
        assert (session.recorder is not None) == session.remembered
        return session.remembered

    assert not await call(ANA, CallTrust.UNVERIFIED, serve_unverified=False)
    assert await call(ANA, CallTrust.UNVERIFIED, serve_unverified=True)
    assert await call(ANA, CallTrust.VERIFIED, serve_unverified=False)
    assert not await call("anonymous", CallTrust.UNVERIFIED, serve_unverified=True)
    assert not await call(None, CallTrust.VERIFIED, serve_unverified=True)
