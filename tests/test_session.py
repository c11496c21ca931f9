"""One call outside Pipecat (memory/calls/session.py): the open-call cache, the trust policy, the
calls kept in Redis for every process."""

from __future__ import annotations

from memory.calls.policy import CallPolicy
from memory.calls.session import CallSession, SessionCache, SharedCalls, open_call
from memory.models import CallTrust, Fact
from memory.privacy.identity import CallerIdentity
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


POLICY = CallPolicy(agent_id="bakery")


async def _vegetarians_call(line: Line, call_id: str) -> tuple[CallerIdentity, CallSession]:
    """A verified call of Ana, who is vegetarian, opened and kept in Redis through door ``api``."""
    assert line.memory is not None
    runtime, queue = runtime_of(line), line.memory.queue
    ana = runtime.identify(ANA, agent_id="bakery")
    assert ana is not None
    await runtime.store.upsert_facts(ana, [Fact(text="Caller is vegetarian", confidence=0.9)])
    opened = await open_call(
        runtime=runtime,
        queue=queue,
        number=ANA,
        call_id=call_id,
        trust=CallTrust.VERIFIED,
        policy=POLICY,
        door="api",
    )
    await SharedCalls(runtime, queue).save("api", opened)
    return ana, opened


async def test_a_call_resumed_in_another_process_keeps_its_prompt_start_and_trust(
    line: Line,
) -> None:
    ana, opened = await _vegetarians_call(line, "shared-1")
    assert line.memory is not None
    runtime, queue = runtime_of(line), line.memory.queue
    # What the memory holds later does not change the prompt the call started with.
    await runtime.store.upsert_facts(ana, [Fact(text="Caller is allergic to nuts", confidence=0.9)])

    elsewhere = SharedCalls(runtime, queue)  # another process's view of the same Redis
    state = await elsewhere.state("api", "shared-1")
    assert state is not None and not state.ended
    resumed = await elsewhere.resume("api", "shared-1", state, policy=POLICY)
    assert resumed.memory_block == opened.memory_block and "vegetarian" in resumed.memory_block
    assert (resumed.caller, resumed.trust, resumed.started_at) == (
        opened.caller,
        CallTrust.VERIFIED,
        opened.started_at,
    )
    assert await elsewhere.state("vapi", "shared-1") is None  # each door its own calls

    await opened.end("caller hung up")
    await SharedCalls(runtime, queue).save("api", opened)
    ended = await elsewhere.state("api", "shared-1")
    assert ended is not None and ended.ended
    assert (await elsewhere.resume("api", "shared-1", ended, policy=POLICY)).ended


async def test_forgetting_a_caller_removes_the_memory_block_of_their_open_call(line: Line) -> None:
    ana, _ = await _vegetarians_call(line, "shared-2")
    assert line.memory is not None
    runtime = runtime_of(line)
    shared = SharedCalls(runtime, line.memory.queue)
    await runtime.store.forget(ana)
    state = await shared.state("api", "shared-2")
    assert state is not None  # the call itself holds no memory content
    assert "vegetarian" not in state.model_dump_json()
    resumed = await shared.resume("api", "shared-2", state, policy=POLICY)
    assert resumed.memory_block == ""
