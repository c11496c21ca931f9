"""The Lua scripts behind every multi-key write of a caller's memory.

Each script runs atomically on the one node that holds the caller's hash tag, so the same code
runs on a single Redis and on a Redis Cluster. Each states its KEYS and ARGV contract above it;
:class:`memory.store.callers.MemoryStore` is the only caller and keeps its arguments in step.
"""

from __future__ import annotations

from memory.models import CONFIDENCE_FLOOR

#: What a write script returns when the tombstone refused it, and when its merge is stale.
REFUSED = -1
STALE = -2

# Lua: refresh the TTL of every key of the script that exists (``ttl`` set by the script),
# the tombstone (always the last key) excepted.
_REFRESH_TTLS = """if ttl > 0 then
  for k = 1, #KEYS - 1 do
    if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('EXPIRE', KEYS[k], ttl) end
  end
end
"""

# Lua: refuse the write when the caller was forgotten after its call began. The tombstone is
# the last key, the call's start time the last argument.
_TOMBSTONE = (
    """local forgot_at = tonumber(redis.call('GET', KEYS[#KEYS]) or '')
if forgot_at and tonumber(ARGV[#ARGV]) < forgot_at then return """
    + str(REFUSED)
    + """ end
"""
)

# Lua: bump the facts version, then evict the lowest-value facts over the cap: superseded
# first, then under the confidence floor, then the least recently confirmed.
_CAP_FACTS = (
    """local function cap_facts(profile, facts, emb, cap)
  redis.call('HINCRBY', profile, 'facts_version', 1)
  if cap <= 0 or redis.call('HLEN', facts) <= cap then return end
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
# KEYS: profile, facts, embeddings, calls, record, call states, call turns, turns, kv, tombstone
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
if n_facts > 0 then cap_facts(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[8])) end
local ttl = tonumber(ARGV[5])
"""
    + _REFRESH_TTLS
    + """return 1
"""
)

# Rewrites changed turns of one call's transcript, and the same turns among the recent turns
# (stored with the same JSON), so a scrubbed transcript leaves no copy of what it replaced.
# KEYS: call turns, recent turns. ARGV: (index, turn json)*
REPLACE_TURNS = """
for i = 1, #ARGV, 2 do
  local index = tonumber(ARGV[i])
  local before = redis.call('LINDEX', KEYS[1], index)
  if before and before ~= ARGV[i + 1] then
    redis.call('LSET', KEYS[1], index, ARGV[i + 1])
    local recent = redis.call('LPOS', KEYS[2], before)
    if recent then redis.call('LSET', KEYS[2], recent, ARGV[i + 1]) end
  end
end
return 1
"""

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
# KEYS: facts, embeddings. ARGV: ttl, (fact id, embedding)*
SET_EMBEDDINGS = """
local stored = 0
for i = 2, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    stored = stored + 1
  end
end
local ttl = tonumber(ARGV[1])
if stored > 0 and ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
return stored
"""


# Appends turns to their call's transcript and to the recent turns, atomically.
# KEYS: call turns, recent turns, profile, tombstone.
# ARGV: transcript cap, recent cap, masked, ttl, turns..., call start
APPEND_TURNS = (
    _TOMBSTONE
    + """
local turns = {unpack(ARGV, 5, #ARGV - 1)}
redis.call('RPUSH', KEYS[1], unpack(turns))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local recent = tonumber(ARGV[2])
if recent > 0 then
  redis.call('RPUSH', KEYS[2], unpack(turns))
  redis.call('LTRIM', KEYS[2], -recent, -1)
end
redis.call('HSET', KEYS[3], 'masked_number', ARGV[3])
local ttl = tonumber(ARGV[4])
"""
    + _REFRESH_TTLS
    + "return 1\n"
)

# Sets hash fields across a caller's hashes and refreshes their TTL, atomically.
# (MULTI/EXEC would do, but redis-py's asyncio cluster transactions break the connection after.)
# KEYS: the hashes, tombstone. ARGV: ttl, then (key index, field, value) triples, call start.
HSET_ALL = (
    _TOMBSTONE
    + """
for i = 2, #ARGV - 1, 3 do redis.call('HSET', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2]) end
local ttl = tonumber(ARGV[1])
"""
    + _REFRESH_TTLS
    + "return 1\n"
)

# Upserts facts outside a call record (the remember tool), then applies the fact cap.
# KEYS: profile, facts, embeddings, tombstone. ARGV: ttl, cap, (id, json, embedding)*, call start
UPSERT_FACTS = (
    _CAP_FACTS
    + _TOMBSTONE
    + """
for i = 3, #ARGV - 1, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  if ARGV[i + 2] ~= '' then redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2]) end
end
cap_facts(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[2]))
local ttl = tonumber(ARGV[1])
"""
    + _REFRESH_TTLS
    + "return 1\n"
)
