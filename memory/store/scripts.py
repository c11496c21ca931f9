"""The Lua scripts behind every multi-key write of a caller's memory, and behind a full load.

Each script runs atomically on the one node that holds the caller's hash tag, so the same code
runs on a single Redis and on a Redis Cluster. Each states its KEYS and ARGV contract above it;
the scripts a typed wrapper runs (:class:`AppendTurns`, :class:`HsetAll`, …) take their keys and
arguments by name, so the positions live in one place.

Every script that changes what the next call start reads (profile, facts, embeddings, recent
turns) bumps the caller's ``memory_version`` in the profile hash and deletes their call-start
digest, in the same atomic step; a digest is stored only while the version it was built at is
still the caller's (:data:`WRITE_DIGEST`). So a stored digest is always current, and a call
start reads it alone (see :mod:`memory.store.digest`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from memory.backend.reply import redis_reply
from memory.models import CONFIDENCE_FLOOR

#: What a write script returns when the tombstone refused it, and when its merge is stale.
REFUSED = -1
STALE = -2

# Lua: refresh the TTL of every key of the script that exists (``ttl`` and ``digest`` set by
# the script), the tombstone (always the last key) excepted, and the call-start digest: its TTL
# is its profile's when it is written (see WRITE_DIGEST), so it never outlives it.
_REFRESH_TTLS = """if ttl > 0 then
  for k = 1, #KEYS - 1 do
    if KEYS[k] ~= digest and redis.call('EXISTS', KEYS[k]) == 1 then
      redis.call('EXPIRE', KEYS[k], ttl)
    end
  end
end
"""

# Lua: what the next call start reads changed (``profile`` and ``digest`` set by the script):
# the digest built from what was there goes with it.
_BUMP_VERSION = "redis.call('HINCRBY', profile, 'memory_version', 1)\nredis.call('DEL', digest)\n"

# Lua: refuse the write when the caller was forgotten after its call began. The tombstone is
# the last key, the call's start time the last argument.
_TOMBSTONE = (
    """local forgot_at = tonumber(redis.call('GET', KEYS[#KEYS]) or '')
if forgot_at and tonumber(ARGV[#ARGV]) < forgot_at then return """
    + str(REFUSED)
    + """ end
"""
)

# Lua: bump the facts and memory versions, then evict the lowest-value facts over the cap:
# superseded first, then under the confidence floor, then the least recently confirmed.
_CAP_FACTS = (
    """local function cap_facts(profile, facts, emb, digest, cap)
  redis.call('HINCRBY', profile, 'facts_version', 1)
  """
    + _BUMP_VERSION
    + """  if cap <= 0 or redis.call('HLEN', facts) <= cap then return end
  local all = redis.call('HGETALL', facts)
  local rows = {}
  for i = 1, #all, 2 do
    local ok, fact = pcall(cjson.decode, all[i + 1])
    local live, confident, confirmed = 0, 0, 0
    if ok and type(fact) == 'table' then
      if fact['sup'] == nil then live = 1 end
      if (tonumber(fact['c']) or 0) >= """
    + str(CONFIDENCE_FLOOR)
    + """ then confident = 1 end
      confirmed = tonumber(fact['lc']) or 0
    end
    rows[#rows + 1] = {all[i], live, confident, confirmed}
  end
  table.sort(rows, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    if a[3] ~= b[3] then return a[3] < b[3] end
    if a[4] ~= b[4] then return a[4] < b[4] end
    return a[1] < b[1]
  end)
  for j = 1, #rows - cap do
    redis.call('HDEL', facts, rows[j][1])
    redis.call('HDEL', emb, rows[j][1])
  end
end
"""
)

# Writes a call record and the profile/fact changes it implies, once per call id and mode.
# KEYS: profile, facts, embeddings, calls, record, call states, call turns, turns, kv, digest,
#       tombstone
# ARGV: call_id, mode, record json, at, ttl, masked, facts version expected ('' = any), fact
#       cap, n_profile, (field, value)*n, n_facts, (id, json, embedding)*n_facts, call start
RECORD_CALL = (
    _CAP_FACTS
    + _TOMBSTONE
    + """
local call_id, mode, at = ARGV[1], ARGV[2], tonumber(ARGV[4])
local state = redis.call('HGET', KEYS[6], call_id)
if state == 'analysed' or (state == 'closed' and mode == 'close') then return 0 end
local version = redis.call('HGET', KEYS[1], 'facts_version') or '0'
if ARGV[7] ~= '' and ARGV[7] ~= version then return """
    + str(STALE)
    + """ end
if not state then
  redis.call('HINCRBY', KEYS[1], 'call_count', 1)
  local first = tonumber(redis.call('HGET', KEYS[1], 'first_seen') or '')
  if not first or at < first then redis.call('HSET', KEYS[1], 'first_seen', ARGV[4]) end
  local last = tonumber(redis.call('HGET', KEYS[1], 'last_seen') or '0')
  if at > last then redis.call('HSET', KEYS[1], 'last_seen', ARGV[4]) end
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'masked_number', ARGV[6]) end
redis.call('SET', KEYS[5], ARGV[3])
redis.call('ZADD', KEYS[4], at, call_id)
local i = 10
local n_profile = tonumber(ARGV[9])
redis.call('HSET', KEYS[6], call_id, mode == 'analyse' and 'analysed' or 'closed')
if mode == 'analyse' then
  local analysed_at = tonumber(redis.call('HGET', KEYS[1], 'last_analysed_at') or '0')
  if at >= analysed_at and n_profile > 0 then
    redis.call('HSET', KEYS[1], 'last_analysed_at', ARGV[4], unpack(ARGV, i, i + 2 * n_profile - 1))
  end
end
i = i + 2 * n_profile
local n_facts = tonumber(ARGV[i])
for j = 1, n_facts do
  local base = i + (j - 1) * 3
  redis.call('HSET', KEYS[2], ARGV[base + 1], ARGV[base + 2])
  if ARGV[base + 3] ~= '' then redis.call('HSET', KEYS[3], ARGV[base + 1], ARGV[base + 3]) end
end
local profile, digest = KEYS[1], KEYS[10]
if n_facts > 0 then cap_facts(profile, KEYS[2], KEYS[3], digest, tonumber(ARGV[8])) end
"""
    + _BUMP_VERSION
    + """local ttl = tonumber(ARGV[5])
"""
    + _REFRESH_TTLS
    + """return 1
"""
)

# Rewrites changed turns of one call's transcript, and the same turns among the recent turns
# (stored with the same JSON), so a scrubbed transcript leaves no copy of what it replaced.
# KEYS: call turns, recent turns, profile, digest. ARGV: (index, turn json)*
REPLACE_TURNS = (
    """
local profile, digest = KEYS[3], KEYS[4]
for i = 1, #ARGV, 2 do
  local index = tonumber(ARGV[i])
  local before = redis.call('LINDEX', KEYS[1], index)
  if before and before ~= ARGV[i + 1] then
    redis.call('LSET', KEYS[1], index, ARGV[i + 1])
    local recent = redis.call('LPOS', KEYS[2], before)
    if recent then
      redis.call('LSET', KEYS[2], recent, ARGV[i + 1])
      """
    + _BUMP_VERSION
    + """    end
  end
end
return 1
"""
)

# Marks a stored call record failed unless the call was analysed meanwhile. A missing record
# (forgotten or expired caller) is not recreated.
# KEYS: call states, record. ARGV: call_id, record json
MARK_FAILED = """
if redis.call('HGET', KEYS[1], ARGV[1]) == 'analysed' then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'KEEPTTL')
return 1
"""

# Stores embeddings of facts that still exist (a fact forgotten meanwhile gets none back).
# KEYS: facts, embeddings, profile, digest. ARGV: ttl, (fact id, embedding)*
SET_EMBEDDINGS = (
    """
local stored, profile, digest = 0, KEYS[3], KEYS[4]
for i = 2, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    stored = stored + 1
  end
end
local ttl = tonumber(ARGV[1])
if stored > 0 and ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
if stored > 0 then """
    + _BUMP_VERSION
    + """end
return stored
"""
)


# Appends turns to their call's transcript and to the recent turns, atomically. Each turn gets
# the caller's next turn number (``seq``, spliced in first: the JSON comes without it), so two
# turns said in the same millisecond still have different ids.
# KEYS: call turns, recent turns, profile, digest, tombstone.
# ARGV: transcript cap, recent cap, masked, ttl, turns..., call start
APPEND_TURNS = (
    _TOMBSTONE
    + """
local profile, digest = KEYS[3], KEYS[4]
local turns = {unpack(ARGV, 5, #ARGV - 1)}
local last = redis.call('HINCRBY', profile, 'turn_seq', #turns)
for j = 1, #turns do
  turns[j] = '{"seq":' .. (last - #turns + j) .. ',' .. string.sub(turns[j], 2)
end
redis.call('RPUSH', KEYS[1], unpack(turns))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local recent = tonumber(ARGV[2])
if recent > 0 then
  redis.call('RPUSH', KEYS[2], unpack(turns))
  redis.call('LTRIM', KEYS[2], -recent, -1)
end
redis.call('HSET', KEYS[3], 'masked_number', ARGV[3])
"""
    + _BUMP_VERSION
    + """local ttl = tonumber(ARGV[4])
"""
    + _REFRESH_TTLS
    + "return 1\n"
)

# Sets hash fields across a caller's hashes and refreshes their TTL, atomically.
# (MULTI/EXEC would do, but redis-py's asyncio cluster transactions break the connection after.)
# KEYS: the hashes, digest, tombstone. ARGV: ttl, index of the profile among the keys when the
# write changes what a call start reads (0: it does not), then (key index, field, value)
# triples, call start.
HSET_ALL = (
    _TOMBSTONE
    + """
for i = 3, #ARGV - 1, 3 do redis.call('HSET', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2]) end
local bumped, digest = tonumber(ARGV[2]), KEYS[#KEYS - 1]
if bumped > 0 then
  local profile = KEYS[bumped]
  """
    + _BUMP_VERSION
    + """end
local ttl = tonumber(ARGV[1])
"""
    + _REFRESH_TTLS
    + "return 1\n"
)

# Upserts facts outside a call record (the remember tool), then applies the fact cap.
# KEYS: profile, facts, embeddings, digest, tombstone.
# ARGV: ttl, cap, (id, json, embedding)*, call start
UPSERT_FACTS = (
    _CAP_FACTS
    + _TOMBSTONE
    + """
for i = 3, #ARGV - 1, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  if ARGV[i + 2] ~= '' then redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2]) end
end
local digest = KEYS[4]
cap_facts(KEYS[1], KEYS[2], KEYS[3], digest, tonumber(ARGV[2]))
local ttl = tonumber(ARGV[1])
"""
    + _REFRESH_TTLS
    + "return 1\n"
)

# Deletes facts and their embeddings.
# KEYS: profile, facts, embeddings, digest. ARGV: fact ids
DELETE_FACTS = (
    """
local profile, digest = KEYS[1], KEYS[4]
local deleted = redis.call('HDEL', KEYS[2], unpack(ARGV))
redis.call('HDEL', KEYS[3], unpack(ARGV))
if deleted > 0 then """
    + _BUMP_VERSION
    + """end
return deleted
"""
)

# Stores a call-start digest if the memory is still at the version it was built from (a write
# since then would have deleted it: it would be stale); a caller without a profile (forgotten,
# expired) gets none. It expires with the profile: it never outlives what it was made from.
# KEYS: profile, digest. ARGV: memory version, digest
WRITE_DIGEST = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if (redis.call('HGET', KEYS[1], 'memory_version') or '0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
local left = redis.call('PTTL', KEYS[1])
if left > 0 then redis.call('PEXPIRE', KEYS[2], left) end
return 1
"""


# Reads what a call loads of its caller, in one reply: the profile, facts and embeddings hashes
# (each a flat field, value list) and the recent turns. One command instead of four: with many
# loads in flight, the client's per-reply work was most of a load's time.
# KEYS: profile, facts, embeddings, recent turns. ARGV: recent turns read (0: none)
READ_MEMORY = """
local recent, turns = tonumber(ARGV[1]), {}
if recent > 0 then turns = redis.call('LRANGE', KEYS[4], -recent, -1) end
return {
  redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
  turns
}
"""


class _Script:
    """One registered script; the subclass's ``__call__`` names its keys and arguments."""

    def __init__(self, redis: Redis, source: str) -> None:
        self.script = redis.register_script(source)

    async def _run(self, keys: Sequence[str], args: Sequence[str | bytes | int | float]) -> int:
        return int(await redis_reply(self.script(keys=list(keys), args=list(args))))


class RecordCall(_Script):
    """Writes a call record and what it changes (:data:`RECORD_CALL`)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, RECORD_CALL)

    async def __call__(
        self,
        *,
        keys: dict[str, str],
        record_key: str,
        transcript_key: str,
        tombstone: str,
        call_id: str,
        analysed: bool,
        record_json: str,
        at: float,
        ttl: int,
        masked: str,
        facts_version: int | None,
        max_facts: int,
        profile: dict[str, str],
        facts: Sequence[tuple[str, str, bytes]],
        call_start: float,
    ) -> int:
        """Run it; 1 written, 0 already done, :data:`REFUSED` or :data:`STALE`.

        Args:
            keys: The caller's keys by part (see ``KeyLayout.caller_keys``).
            record_key: The call record's key.
            transcript_key: The call's transcript key.
            tombstone: The caller's tombstone key.
            call_id: The call.
            analysed: An analysed record (else a closed one).
            record_json: The record without its transcript.
            at: When the call ended (or began).
            ttl: Seconds the keys live (0: no expiry).
            masked: The masked number.
            facts_version: The facts version the merge was made from (None: any).
            max_facts: The fact cap (0: none).
            profile: Profile fields the analysis replaces.
            facts: (id, stored JSON, embedding or b"") of each fact upserted.
            call_start: When the call began (a forget after it refuses the write).
        """
        fact_args = [item for fact in facts for item in fact]
        return await self._run(
            [
                keys["profile"],
                keys["facts"],
                keys["emb"],
                keys["calls"],
                record_key,
                keys["callstate"],
                transcript_key,
                keys["turns"],
                keys["kv"],
                keys["digest"],
                tombstone,
            ],
            [
                call_id,
                "analyse" if analysed else "close",
                record_json,
                repr(at),
                ttl,
                masked,
                "" if facts_version is None else str(facts_version),
                max_facts,
                len(profile),
                *[item for pair in profile.items() for item in pair],
                len(facts),
                *fact_args,
                repr(call_start),
            ],
        )


class UpsertFacts(_Script):
    """Upserts facts outside a call record, then caps them (:data:`UPSERT_FACTS`)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, UPSERT_FACTS)

    async def __call__(
        self,
        *,
        profile: str,
        facts_key: str,
        embeddings: str,
        digest_key: str,
        tombstone: str,
        ttl: int,
        max_facts: int,
        facts: Sequence[tuple[str, str, bytes]],
        call_start: float,
    ) -> int:
        """Run it; 1 written or :data:`REFUSED`. ``facts``: (id, stored JSON, embedding or b"")."""
        return await self._run(
            [profile, facts_key, embeddings, digest_key, tombstone],
            [ttl, max_facts, *[item for fact in facts for item in fact], repr(call_start)],
        )


class AppendTurns(_Script):
    """Appends turns to a transcript and the recent turns, numbering them (:data:`APPEND_TURNS`)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, APPEND_TURNS)

    async def __call__(
        self,
        *,
        transcript: str,
        recent: str,
        profile: str,
        digest_key: str,
        tombstone: str,
        transcript_cap: int,
        recent_cap: int,
        masked: str,
        ttl: int,
        turns: Sequence[str],
        call_start: float,
    ) -> int:
        """Run it; 1 appended or :data:`REFUSED`. ``turns``: stored JSON without ``seq``."""
        return await self._run(
            [transcript, recent, profile, digest_key, tombstone],
            [transcript_cap, recent_cap, masked, ttl, *turns, repr(call_start)],
        )


class HsetAll(_Script):
    """Sets fields across a caller's hashes (:data:`HSET_ALL`)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, HSET_ALL)

    async def __call__(
        self,
        *,
        hashes: Sequence[str],
        digest_key: str,
        tombstone: str,
        ttl: int,
        profile_index: int,
        fields: Sequence[tuple[int, str, str | bytes]],
        call_start: float,
    ) -> int:
        """Run it; 1 written or :data:`REFUSED`.

        Args:
            hashes: The hashes written.
            digest_key: The caller's call-start digest (deleted when the version is bumped).
            tombstone: The caller's tombstone key.
            ttl: Seconds the hashes live (0: no expiry).
            profile_index: 1-based index of the profile in ``hashes`` when the write changes
                what a call start reads (its memory version is bumped); 0 when it does not.
            fields: (1-based index into ``hashes``, field, value).
            call_start: When the call began (a forget after it refuses the write).
        """
        args: list[str | bytes | int | float] = [ttl, profile_index]
        for index, field, value in fields:
            args += [index, field, value]
        args.append(repr(call_start))
        return await self._run([*hashes, digest_key, tombstone], args)


class ReplaceTurns(_Script):
    """Rewrites turns of a transcript and the same recent turns (:data:`REPLACE_TURNS`)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, REPLACE_TURNS)

    async def __call__(
        self,
        *,
        transcript: str,
        recent: str,
        profile: str,
        digest_key: str,
        turns: Sequence[tuple[int, str]],
    ) -> int:
        """Run it. ``turns``: (index in the transcript, new stored JSON)."""
        return await self._run(
            [transcript, recent, profile, digest_key], [item for turn in turns for item in turn]
        )


class SetEmbeddings(_Script):
    """Stores embeddings of facts that still exist (:data:`SET_EMBEDDINGS`)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, SET_EMBEDDINGS)

    async def __call__(
        self,
        *,
        facts_key: str,
        embeddings: str,
        profile: str,
        digest_key: str,
        ttl: int,
        vectors: dict[str, bytes],
    ) -> int:
        """Run it; how many were stored."""
        return await self._run(
            [facts_key, embeddings, profile, digest_key],
            [ttl, *[item for pair in vectors.items() for item in pair]],
        )


class DeleteFacts(_Script):
    """Deletes facts and their embeddings (:data:`DELETE_FACTS`)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, DELETE_FACTS)

    async def __call__(
        self,
        *,
        profile: str,
        facts_key: str,
        embeddings: str,
        digest_key: str,
        fact_ids: Sequence[str],
    ) -> int:
        """Run it; how many facts were deleted."""
        return await self._run([profile, facts_key, embeddings, digest_key], list(fact_ids))


class WriteDigest(_Script):
    """Stores a call-start digest if the memory is still at its version (:data:`WRITE_DIGEST`)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, WRITE_DIGEST)

    async def __call__(self, *, profile: str, digest_key: str, version: int, digest: bytes) -> bool:
        """Run it; False when the memory changed since ``version`` (or is gone)."""
        return bool(await self._run([profile, digest_key], [str(version), digest]))


class MarkFailed(_Script):
    """Marks a stored call record failed (:data:`MARK_FAILED`)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, MARK_FAILED)

    async def __call__(
        self, *, call_states: str, record_key: str, call_id: str, record: str
    ) -> bool:
        """Run it; False when the call was analysed meanwhile or is not stored."""
        return bool(await self._run([call_states, record_key], [call_id, record]))


class ReadMemory:
    """Reads a caller's profile, facts, embeddings and turns in one reply (:data:`READ_MEMORY`).

    Added to a pipeline (the store's coalesced reads) as ``EVAL``, the script's text with it:
    unlike ``EVALSHA``, nothing to load first on each node, a restarted one included.
    """

    @staticmethod
    def add_to(
        pipe: Any, *, profile: str, facts_key: str, embeddings: str, turns: str, recent: int
    ) -> None:
        """Add the read to ``pipe``; its reply is :meth:`parse`'s input."""
        pipe.eval(READ_MEMORY, 4, profile, facts_key, embeddings, turns, recent)

    @staticmethod
    def parse(
        reply: list[Any],
    ) -> tuple[dict[bytes, bytes], dict[bytes, bytes], dict[bytes, bytes], list[bytes]]:
        """The profile, facts and embeddings hashes (as ``HGETALL`` gives them) and the turns."""
        profile, facts, embeddings, turns = reply
        return _pairs(profile), _pairs(facts), _pairs(embeddings), turns


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    fields = iter(flat)
    return dict(zip(fields, fields, strict=True))
