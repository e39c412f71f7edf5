-- drain: removes up to `limit` waiting tasks of a queue (`wasmq queue drain`), finishing each as
-- cancelled with `cancel_reason` `drained` (their blocked dependents are cancelled with them, as
-- by a cancel). Bounded per call so that Redis never blocks on a large queue: the caller calls
-- again while it reports more. Pending tasks go in the queue's policy order; delayed ones by due
-- time; blocked ones by when they were enqueued. Running tasks are left alone.
--
-- KEYS[1] pending    P:{Q}:pending    (zset)
-- KEYS[2] delayed    P:{Q}:delayed    (zset)
-- KEYS[3] cancelled  P:{Q}:cancelled  (zset)
-- KEYS[4] stats      P:{Q}:stats      (hash)
-- KEYS[5] modrefs    P:{Q}:modrefs    (hash)
-- KEYS[6] meta       P:{Q}:meta       (hash)
-- KEYS[7] signal     P:{Q}:signal     (list)
-- ARGV[1] base       P:{Q}:
-- ARGV[2] clock      clock offset ms (0 outside tests)
-- ARGV[3] retention  the caller's default retention (see lib.lua `retention`)
-- ARGV[4] states     which waiting tasks: any of pending, delayed, blocked, comma-separated
-- ARGV[5] limit      most tasks finished by this call
-- ARGV[6] cursor     where the scan of the groups' pools stands ('0' on the first call; then what
--                    the last call returned)
-- Returns {drained, more, cursor}: how many tasks this call finished, 1 when it stopped at the
-- limit, and the cursor to pass to the next call.
local K = {pending = KEYS[1], delayed = KEYS[2], cancelled = KEYS[3], stats = KEYS[4], modrefs = KEYS[5], meta = KEYS[6],
  signal = KEYS[7]}
local limit = tonumber(ARGV[5]) or 1000
local want = {}
for s in string.gmatch(ARGV[4], '[^,]+') do want[s] = true end
local b = new_batch(K, ARGV[3])
local drained, popped = 0, 0

local function drain_one(seq, expected)
  local tkey = task_key(seq)
  -- A dependent cancelled earlier in this call (or a tombstone) is no longer in that state.
  if redis.call('HGET', tkey, 'state') ~= expected then return false end
  finish(b, seq, tkey, 'cancelled', {'cancel_reason', 'drained'}, nil)
  drained = drained + 1
  return true
end

local cursor = ARGV[6] or '0'
if want.pending then
  local pol = queue_policy(K.meta)
  local tombstones = 0
  -- Drains one pool; true when it is empty.
  local function drain_pool(group)
    while popped < limit do
      local got = pop_pending(pol, math.min(limit - popped, 500), group)
      if #got == 0 then return true end
      for _, e in ipairs(got) do
        popped = popped + 1
        if not drain_one(e.seq, 'pending') and e.level then tombstones = tombstones + 1 end
      end
    end
    return false
  end
  local done = drain_pool('')
  -- The groups' pools, a page of the groups with work at a time (`cursor` carries the scan over
  -- calls). A drained group stays where it is in the rotation: a claim finds it empty and takes
  -- it out.
  local visits = 0
  while done and pol.grouped and visits < limit do
    local page = redis.call('HSCAN', BASE .. 'groups:state', cursor, 'COUNT', 100)
    for i = 1, #page[2], 2 do
      local g = page[2][i]
      visits = visits + 1
      if g ~= '' and not drain_pool(g) then done = false; break end
    end
    if not done then break end
    cursor = page[1]
    if cursor == '0' then break end
  end
  if tombstones > 0 and hincr(K.stats, 'tombstones', -tombstones) < 0 then redis.call('HSET', K.stats, 'tombstones', 0) end
  if not done or (pol.grouped and cursor ~= '0') then popped = math.max(popped, limit) end
end
for _, s in ipairs({'delayed', 'blocked'}) do
  if want[s] then
    local key = BASE .. s
    while popped < limit do
      local seqs = redis.call('ZRANGE', key, 0, math.min(limit - popped, 500) - 1)
      if #seqs == 0 then break end
      redis.call('ZREM', key, unpack(seqs))
      for _, seq in ipairs(seqs) do
        popped = popped + 1
        drain_one(seq, s)
      end
    end
  end
end
flush(b)
return {drained, popped >= limit and 1 or 0, cursor}
